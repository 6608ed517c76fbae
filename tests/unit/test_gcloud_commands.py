"""`python -m deploy deploy`: the exact gcloud commands, the dry-run and a missing gcloud."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import REPO
from deploy.__main__ import main
from deploy.gcloud import deploy_command, gcloud_list
from deploy.manifest import load_manifest
from tests import fake_gcloud

OVERRIDES = """\
defaults:
  project: relay-prod-42
  region: europe-west3
  memory: 512Mi
  cpu: 1
  concurrency: 80
  vpc_connector: onprem-connector
  service_account: relay@relay-prod-42.iam.gserviceaccount.com
  allow_unauthenticated: true
  auth: {mode: bearer}
  secrets:
    AMQP_URL: {secret: amqp-url}
    AMQP_CA_CERT: {secret: amqp-ca}
    AMQP_CLIENT_CERT: {secret: amqp-cert}
    AMQP_CLIENT_KEY: {secret: amqp-key}
    AUTH_SECRETS: {secret: auth}
  env: {AMQP_EXCHANGE: event-relay}
functions:
  login_bruteforce:
    entry_point: login_bruteforce
    runtime: python313
    region: us-central1
    memory: 1Gi
    cpu: 2
    timeout: 30s
    min_instances: 2
    max_instances: 50
    concurrency: 200
    workers: 2
    ingress: internal-and-gclb
    vpc_connector: null
    allow_unauthenticated: false
    auth: {mode: grafana-hmac, tolerance_seconds: 120, timestamp_header: X-Ts}
    env: {AMQP_URL_COMMENT_FREE: "a,b"}
    secrets:
      AUTH_SECRETS: {secret: grafana-key, via: env, version: "3"}
      AMQP_URL: {secret: amqp-url, via: runtime, version: "7"}
      AMQP_CA_CERT: {secret: amqp-ca, path: /etc/relay-ca/ca.pem}
"""


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "functions.yaml"
    path.write_text(OVERRIDES)
    return path


def test_a_function_with_overrides_gets_exactly_this_command(manifest: Path) -> None:
    [fn] = load_manifest(manifest)

    assert deploy_command(fn, Path("/b/login_bruteforce")) == [
        "gcloud", "functions", "deploy", "login_bruteforce", "--gen2",
        "--runtime=python313",
        "--region=us-central1",
        "--source=/b/login_bruteforce",
        "--entry-point=login_bruteforce",
        "--trigger-http",
        # A value holds a comma: gcloud's ^@^ syntax switches the list delimiter.
        "--set-env-vars=^@^FUNCTION_USE_ASGI=1@WORKERS=2@AUTH_MODE=grafana-hmac"
        "@AUTH_TOLERANCE_SECONDS=120@AUTH_TIMESTAMP_HEADER=X-Ts"
        "@GOOGLE_CLOUD_PROJECT=relay-prod-42@AMQP_EXCHANGE=event-relay"
        "@AMQP_URL_COMMENT_FREE=a,b"
        "@AMQP_URL_SECRET=projects/relay-prod-42/secrets/amqp-url/versions/7"
        "@AMQP_CA_CERT_FILE=/etc/relay-ca/ca.pem"
        "@AMQP_CLIENT_CERT_FILE=/secrets/amqp-client-cert/value"
        "@AMQP_CLIENT_KEY_FILE=/secrets/amqp-client-key/value",
        "--set-secrets=/etc/relay-ca/ca.pem=amqp-ca:latest,"
        "/secrets/amqp-client-cert/value=amqp-cert:latest,"
        "/secrets/amqp-client-key/value=amqp-key:latest,"
        "AUTH_SECRETS=grafana-key:3",
        "--min-instances=2",
        "--max-instances=50",
        "--concurrency=200",
        "--cpu=2",
        "--memory=1Gi",
        "--timeout=30s",
        "--clear-vpc-connector",
        "--ingress-settings=internal-and-gclb",
        "--no-allow-unauthenticated",
        "--service-account=relay@relay-prod-42.iam.gserviceaccount.com",
        "--project=relay-prod-42",
    ]  # fmt: skip


def test_the_repository_manifest_deploys_over_the_vpc_connector_without_google_auth() -> None:
    fn = {f.name: f for f in load_manifest()}["vm_isolate"]

    argv = deploy_command(fn, Path("/b/vm_isolate"))

    assert argv[:5] == ["gcloud", "functions", "deploy", "vm_isolate", "--gen2"]
    assert "--allow-unauthenticated" in argv
    assert "--min-instances=1" in argv
    assert "--egress-settings=private-ranges-only" in argv
    assert any(a.startswith("--vpc-connector=projects/") for a in argv)
    env = next(a for a in argv if a.startswith("--set-env-vars="))
    assert "FUNCTION_USE_ASGI=1" in env
    assert "AUTH_SECRETS_FILE=/secrets/auth-secrets/value" in env


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["A=1", "B=2"], "A=1,B=2"),
        (["A=1", "B=x,y"], "^@^A=1@B=x,y"),
        (["A=a@b", "B=x,y"], "^|^A=a@b|B=x,y"),
        (["^A=1"], "^@^^A=1"),
    ],
)
def test_list_arguments_escape_commas_the_gcloud_way(items: list[str], expected: str) -> None:
    assert gcloud_list(items) == expected


def test_dry_run_prints_the_stage_and_deploy_commands_says_what_is_staged_and_runs_nothing(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = tmp_path / "build"
    argv = ["--manifest", str(manifest), "deploy", "--dry-run", "--only", "login_bruteforce",
            "--build-dir", str(build)]  # fmt: skip

    code = main(argv)

    header, stage, deploy, last = capsys.readouterr().out.splitlines()
    assert code == 0
    [fn] = load_manifest(manifest)
    assert header == (
        f"# 1. stage login_bruteforce into {build / 'login_bruteforce'} "
        "(not there yet: the stage command makes it), then deploy it"
    )
    assert shlex.split(stage) == [
        "python", "-m", "deploy", "--manifest", str(manifest), "stage",
        "--only", "login_bruteforce", "--build-dir", str(build),
    ]  # fmt: skip
    assert shlex.split(deploy) == deploy_command(fn, build / "login_bruteforce")
    assert last == "# dry run: nothing was run"
    assert not build.exists()  # a dry run changes nothing

    (build / "login_bruteforce").mkdir(parents=True)
    main(argv)

    assert "(staged earlier: the stage command rebuilds it)" in capsys.readouterr().out


def test_dry_run_warns_of_the_manifests_example_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["deploy", "--dry-run", "--only", "vm_isolate"]) == 0

    warnings = capsys.readouterr().err.splitlines()
    assert [w.split(": ", 2)[2] for w in warnings] == [
        "project my-gcp-project is an example value: put your own",
        "service_account event-relay@my-gcp-project.iam.gserviceaccount.com is an example value:"
        " put your own",
        "vpc_connector projects/my-gcp-project/locations/europe-west3/connectors/onprem is an"
        " example value: put your own",
    ]
    assert all(w.startswith("warning: ") for w in warnings)


def test_only_an_unknown_function_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "--dry-run", "--only", "vm_isolat"]) == 1
    assert "--only vm_isolat: not in the manifest" in capsys.readouterr().err


def test_a_missing_gcloud_is_one_clear_line_suggesting_dry_run(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no gcloud there

    done = subprocess.run(
        [sys.executable, "-m", "deploy", "deploy", "--build-dir", str(tmp_path / "build")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "gcloud is not installed" in done.stderr
    assert "--dry-run" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "build").exists()


def test_a_real_deploy_stages_then_runs_the_printed_command(
    manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in fake_gcloud.install(tmp_path / "cloud").items():
        monkeypatch.setenv(name, value)
    build = tmp_path / "build"

    assert main(["--manifest", str(manifest), "deploy", "--build-dir", str(build)]) == 0

    [fn] = load_manifest(manifest)
    assert fake_gcloud.calls(tmp_path / "cloud") == [deploy_command(fn, build / fn.name)[1:]]
    assert (build / fn.name / "main.py").is_file()
    assert (build / fn.name / "shared" / "auth.py").is_file()


SPOOL = """\
spool:
  topic: relay-spool
  drain: {max_instances: 3, service_account: drain@relay-prod-42.iam.gserviceaccount.com}
  trigger_service_account: trigger@relay-prod-42.iam.gserviceaccount.com
"""


def dry_run(manifest: Path, capsys: pytest.CaptureFixture[str]) -> list[list[str]]:
    assert main(["--manifest", str(manifest), "deploy", "--dry-run"]) == 0
    return [shlex.split(line) for line in capsys.readouterr().out.splitlines() if line[:1] != "#"]


def test_without_a_spool_block_nothing_of_the_spool_is_deployed(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    commands = dry_run(manifest, capsys)

    assert [argv[:3] for argv in commands if argv[0] == "gcloud"] == [
        ["gcloud", "functions", "deploy"]
    ]
    assert not [arg for argv in commands for arg in argv if arg.startswith("SPOOL_TOPIC")]
    assert not [arg for argv in commands for arg in argv if "SPOOL_TOPIC=" in arg]


def test_the_spool_block_deploys_the_topic_its_publishers_and_the_drain(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest.write_text(manifest.read_text() + SPOOL)

    gcloud = [argv for argv in dry_run(manifest, capsys) if argv[0] == "gcloud"]

    project = "--project=relay-prod-42"
    assert gcloud[0] == [
        "gcloud", "pubsub", "topics", "create", "relay-spool", "--labels=app=event-relay", project
    ]  # fmt: skip
    assert gcloud[1] == [
        "gcloud", "pubsub", "topics", "add-iam-policy-binding", "relay-spool",
        "--member=serviceAccount:relay@relay-prod-42.iam.gserviceaccount.com",
        "--role=roles/pubsub.publisher", project,
    ]  # fmt: skip
    function, drain, invoker = gcloud[2:]
    env = next(a for a in function if a.startswith("--set-env-vars="))
    assert "SPOOL_TOPIC=projects/relay-prod-42/topics/relay-spool" in env
    assert drain[:4] == ["gcloud", "functions", "deploy", "spool_drain"]
    assert "--trigger-topic=relay-spool" in drain
    assert "--retry" in drain
    assert "--trigger-service-account=trigger@relay-prod-42.iam.gserviceaccount.com" in drain
    assert "--trigger-http" not in drain
    assert "--no-allow-unauthenticated" in drain
    assert "--ingress-settings=internal-only" in drain
    assert "--service-account=drain@relay-prod-42.iam.gserviceaccount.com" in drain
    drain_env = next(a for a in drain if a.startswith("--set-env-vars="))
    assert "AUTH_" not in drain_env  # the drain is Eventarc's to call: no callers' secrets
    assert "SPOOL_TOPIC" not in drain_env
    assert invoker == [
        "gcloud", "functions", "add-invoker-policy-binding", "spool_drain",
        "--region=europe-west3",
        "--member=serviceAccount:trigger@relay-prod-42.iam.gserviceaccount.com", project,
    ]  # fmt: skip
