"""`python -m deploy bootstrap`: the order of a first deployment, a second run that skips what
exists, inputs that are missing or wrong, and secret values that are never printed.

Run against a stand-in gcloud that keeps a project in a JSON file (tests/fake_gcloud.py): it is
for the order and the idempotence only; the real gcloud's parser checks the commands
themselves (test_gcloud_parser.py). The topology and the smoke test need a broker and a
function: tests/e2e/test_smoke.py runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy.__main__ import main
from tests import fake_gcloud

MANIFEST = """\
defaults:
  project: relay-test-123
  region: europe-west3
  cpu: 1
  concurrency: 80
  vpc_connector: onprem
  service_account: relay@relay-test-123.iam.gserviceaccount.com
  allow_unauthenticated: true
  auth: {mode: bearer}
  secrets:
    AMQP_URL: {secret: amqp-url}
    AMQP_CA_CERT: {secret: amqp-ca}
    AMQP_CLIENT_CERT: {secret: amqp-cert}
    AMQP_CLIENT_KEY: {secret: amqp-key}
    AUTH_SECRETS: {secret: auth-bearer}
functions:
  vm_isolate: {}
  login_bruteforce:
    auth: {mode: grafana-hmac}
    secrets:
      AUTH_SECRETS: {secret: auth-grafana}
"""
SECRET_VALUE = "s3cr3t-value-that-must-never-be-printed"
# By setting where it names one secret; AUTH_SECRETS names two here, so by secret name.
FILES = ("AMQP_URL", "AMQP_CA_CERT", "AMQP_CLIENT_CERT", "AMQP_CLIENT_KEY", "auth-bearer",
         "auth-grafana")  # fmt: skip
SECRETS = ("amqp-url", "amqp-ca", "amqp-cert", "amqp-key", "auth-bearer", "auth-grafana")
ACCOUNT = "relay@relay-test-123.iam.gserviceaccount.com"
FIRST_RUN = [
    "services enable cloudfunctions.googleapis.com",
    "iam service-accounts create relay",
    *(
        change
        for secret in SECRETS
        for change in (
            f"secrets create {secret}",
            f"secrets versions add {secret}",
            f"secrets add-iam-policy-binding {secret}",
        )
    ),
    "compute networks vpc-access connectors create onprem",
    "functions deploy vm_isolate",
    "functions deploy login_bruteforce",
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project behind a fake gcloud first on PATH; its folder."""
    folder = tmp_path / "cloud"
    for name, value in fake_gcloud.install(folder).items():
        monkeypatch.setenv(name, value)
    return folder


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "functions.yaml"
    path.write_text(MANIFEST)
    return path


@pytest.fixture
def secret_files(tmp_path: Path) -> list[str]:
    """--secret-file options for every secret, each file holding SECRET_VALUE and its name."""
    options = []
    for name in FILES:
        path = tmp_path / "secrets" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"{SECRET_VALUE}-{name}")
        options += ["--secret-file", f"{name}={path}"]
    return options


def bootstrap(manifest: Path, tmp_path: Path, *args: str) -> int:
    return main(
        ["--manifest", str(manifest), "bootstrap", "--vpc-range", "10.8.0.0/28",
         "--build-dir", str(tmp_path / "build"), "--no-topology", "--no-smoke-test", *args]
    )  # fmt: skip


def test_a_first_run_makes_everything_in_order_and_a_second_run_nothing(
    project: Path,
    manifest: Path,
    secret_files: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert bootstrap(manifest, tmp_path, *secret_files) == 0
    first = capsys.readouterr()

    assert fake_gcloud.mutations(project) == FIRST_RUN
    cloud: dict[str, Any] = fake_gcloud.state(project)
    assert cloud["accounts"] == [ACCOUNT]
    for file, secret in zip(FILES, SECRETS, strict=True):
        assert cloud["secrets"][secret] == {
            "versions": [f"{SECRET_VALUE}-{file}"],  # from the file, as it is
            "members": [f"serviceAccount:{ACCOUNT}"],
        }
    assert sorted(cloud["functions"]) == ["login_bruteforce", "vm_isolate"]
    assert (tmp_path / "build" / "vm_isolate" / "shared").is_dir()  # staged before deploying
    # One `secrets list` answers every secret's check; it comes before any secret is made.
    listings = [
        n for n, argv in enumerate(fake_gcloud.calls(project)) if argv[:2] == ["secrets", "list"]
    ]
    assert len(listings) == 1
    assert SECRET_VALUE not in first.out + first.err
    assert "done: 23 steps run, 0 skipped" in first.out

    calls_before = len(fake_gcloud.calls(project))
    assert bootstrap(manifest, tmp_path, *secret_files) == 0
    second = capsys.readouterr()

    assert fake_gcloud.mutations(project) == FIRST_RUN  # nothing new
    assert second.out.count("already there: skipped") == 23
    assert "done: 0 steps run, 23 skipped" in second.out
    assert len(fake_gcloud.calls(project)) - calls_before == 1 + 1 + 1 + 6 + 6 + 1 + 2  # checks


def test_a_run_after_a_partial_one_makes_only_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manifest: Path, secret_files: list[str]
) -> None:
    folder = tmp_path / "cloud"
    already = {
        "accounts": [ACCOUNT],
        "secrets": {"amqp-url": {"versions": ["old"], "members": [f"serviceAccount:{ACCOUNT}"]},
                    "amqp-ca": {"versions": [], "members": []}},
        "connectors": ["onprem"],
    }  # fmt: skip
    for name, value in fake_gcloud.install(folder, already).items():
        monkeypatch.setenv(name, value)

    assert bootstrap(manifest, tmp_path, *secret_files) == 0

    made = fake_gcloud.mutations(folder)
    assert "iam service-accounts create relay" not in made
    assert not [m for m in made if m.endswith(" amqp-url")]  # its version is kept, not replaced
    assert "secrets create amqp-ca" not in made
    assert "secrets versions add amqp-ca" in made  # it existed without a version
    assert "compute networks vpc-access connectors create onprem" not in made
    assert fake_gcloud.state(folder)["secrets"]["amqp-url"]["versions"] == ["old"]


def test_a_secret_without_its_file_stops_the_run_before_anything_after_it(
    project: Path,
    manifest: Path,
    secret_files: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    without_grafana = secret_files[:-2]

    assert bootstrap(manifest, tmp_path, *without_grafana) == 1

    err = capsys.readouterr().err
    assert "the first version of auth-grafana" in err
    assert "--secret-file auth-grafana=PATH" in err
    made = fake_gcloud.mutations(project)
    assert made[-1] == "secrets create auth-grafana"  # made, then stopped for its value
    assert not [m for m in made if m.startswith("functions deploy")]


def test_a_secret_that_already_has_a_version_needs_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manifest: Path, secret_files: list[str]
) -> None:
    folder = tmp_path / "cloud"
    kept = {"secrets": {"auth-grafana": {"versions": ["kept"], "members": []}}}
    for name, value in fake_gcloud.install(folder, kept).items():
        monkeypatch.setenv(name, value)

    assert bootstrap(manifest, tmp_path, *secret_files[:-2]) == 0

    assert fake_gcloud.state(folder)["secrets"]["auth-grafana"]["versions"] == ["kept"]
    assert "secrets add-iam-policy-binding auth-grafana" in fake_gcloud.mutations(folder)


def test_the_dry_run_runs_nothing_says_what_it_would_check_and_prints_no_secret(
    project: Path,
    manifest: Path,
    secret_files: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert bootstrap(manifest, tmp_path, "--dry-run", *secret_files[:-2]) == 0

    out, err = capsys.readouterr()
    assert fake_gcloud.calls(project) == []
    assert not (tmp_path / "build").exists()
    assert out.rstrip().splitlines()[-1] == "# dry run: nothing was run"
    assert (
        "#    skipped when it lists amqp-url: gcloud secrets list --project=relay-test-123" in out
    )
    assert "#    cannot run as printed: no file for auth-grafana" in out
    assert "# gcloud secrets versions add auth-grafana --data-file=PATH" in out  # commented out
    assert "# the operator needs:" in out
    assert SECRET_VALUE not in out + err


@pytest.mark.parametrize(
    ("option", "error"),
    [
        ("AMQP_UR=x", "--secret-file AMQP_UR: neither a secret nor a secret setting"),
        ("AUTH_SECRETS=x", "AUTH_SECRETS is 2 secrets here (auth-bearer, auth-grafana)"),
        ("AMQP_URL=/nonexistent/file", "--secret-file AMQP_URL: /nonexistent/file is not a file"),
        ("AMQP_URL=", "'AMQP_URL=': NAME=PATH"),
    ],
)
def test_a_wrong_secret_file_option_is_one_clear_error(
    project: Path,
    manifest: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: str,
    error: str,
) -> None:
    if option.endswith("=x"):
        (tmp_path / "x").write_text("value")
        option = option.replace("=x", f"={tmp_path / 'x'}")

    if option.endswith("="):  # refused by the argument parser
        with pytest.raises(SystemExit):
            bootstrap(manifest, tmp_path, "--dry-run", "--secret-file", option)
    else:
        assert bootstrap(manifest, tmp_path, "--dry-run", "--secret-file", option) == 1

    assert error in capsys.readouterr().err
    assert fake_gcloud.calls(project) == []


def test_an_empty_secret_file_is_refused(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").write_text("")

    assert (
        bootstrap(
            manifest, tmp_path, "--dry-run", "--secret-file", f"AMQP_URL={tmp_path / 'empty'}"
        )
        == 1
    )

    assert "is empty" in capsys.readouterr().err


def test_the_repository_manifest_warns_of_its_example_values_and_a_real_run_refuses_them(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bootstrap", "--dry-run", "--no-smoke-test"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ")
    for value in ("project my-gcp-project", "service_account event-relay@my-gcp-project",
                  "vpc_connector projects/my-gcp-project/"):  # fmt: skip
        assert f"{value}" in err

    assert main(["bootstrap", "--build-dir", str(tmp_path / "build")]) == 1

    assert "is an example value" in capsys.readouterr().err
    assert fake_gcloud.calls(project) == []
