"""deploy/functions.yaml: defaults, per-function overrides, and errors that name entry and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from deploy.manifest import ManifestError, load_manifest

SECRETS = """\
    secrets:
      AMQP_URL: {secret: amqp-url}
      AMQP_CA_CERT: {secret: amqp-ca}
      AMQP_CLIENT_CERT: {secret: amqp-cert}
      AMQP_CLIENT_KEY: {secret: amqp-key}
      AUTH_SECRETS: {secret: auth}
"""


def write(tmp_path: Path, functions: str, defaults: str = "") -> Path:
    """A manifest with working defaults, plus `defaults` lines and the `functions` block."""
    path = tmp_path / "functions.yaml"
    path.write_text(
        "defaults:\n"
        "  region: europe-west3\n"
        "  service_account: relay@proj-123.iam.gserviceaccount.com\n"
        "  auth: {mode: bearer}\n"
        + textwrap.indent(textwrap.dedent(SECRETS), "  ")
        + textwrap.indent(textwrap.dedent(defaults), "  ")
        + "functions:\n"
        + textwrap.indent(textwrap.dedent(functions), "  ")
    )
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    return str(caught.value)


def test_the_repository_manifest_applies_defaults_and_overrides() -> None:
    functions = {fn.name: fn for fn in load_manifest()}

    assert set(functions) == {"vm_isolate", "disk_space_low", "service_down", "login_bruteforce"}
    assert functions["vm_isolate"].min_instances == 1
    assert functions["disk_space_low"].min_instances == 0
    assert functions["login_bruteforce"].max_instances == 20
    assert functions["service_down"].max_instances == 10
    disk = functions["disk_space_low"]
    assert (disk.entry_point, disk.queue, disk.routing_key) == (
        "disk_space_low",
        "event-relay.disk_space_low",
        "disk.space-low",
    )
    assert disk.source_dir.name == "disk_space_low"
    assert disk.allow_unauthenticated is True


def test_env_and_secrets_merge_key_by_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        vm_isolate:
          env: {LOG_LEVEL: DEBUG, AMQP_PUBLISH_TIMEOUT: 3}
          secrets:
            AUTH_SECRETS: {secret: vm-auth, via: env, version: "2"}
        """,
        defaults="env: {AMQP_EXCHANGE: relay, LOG_LEVEL: INFO}\n",
    )

    [fn] = load_manifest(path)

    assert fn.env == {"AMQP_EXCHANGE": "relay", "LOG_LEVEL": "DEBUG", "AMQP_PUBLISH_TIMEOUT": "3"}
    assert fn.secrets["AUTH_SECRETS"].secret == "vm-auth"
    assert fn.secrets["AMQP_URL"].secret == "amqp-url"
    assert fn.queue == "relay.vm_isolate"


ERRORS = [
    pytest.param(
        "disk_space_low: {memory: lots}\n",
        "",
        "functions.disk_space_low.memory: String should match pattern",
        id="bad-memory",
    ),
    pytest.param(
        "vm_isolate: {memroy: 1Gi}\n",
        "",
        "functions.vm_isolate.memroy: Extra inputs are not permitted",
        id="unknown-field",
    ),
    pytest.param(
        "no_such_event: {memory: 1Gi}\n",
        "",
        "functions.no_such_event: no event type 'no_such_event': declare it in shared/schemas.py",
        id="no-event-type",
    ),
    pytest.param(
        "vm_isolate: {}\n",
        "max_instances: 0\n",
        "defaults.max_instances: Input should be greater than or equal to 1",
        id="bad-default",
    ),
    pytest.param(
        "vm_isolate: {concurrency: 80, cpu: 0.5}\n",
        "",
        "functions.vm_isolate.cpu: concurrency 80 needs cpu >= 1",
        id="concurrency-without-cpu",
    ),
    pytest.param(
        "vm_isolate: {env: {DEBUG: 'true'}}\n",
        "",
        "functions.vm_isolate.env.DEBUG: set by deploy, the platform or `auth`",
        id="reserved-env",
    ),
    pytest.param(
        "vm_isolate: {env: {AMQP_URL_FILE: /x}}\n",
        "",
        "functions.vm_isolate.env.AMQP_URL_FILE: AMQP_URL is a secret",
        id="secret-as-env",
    ),
    pytest.param(
        "vm_isolate:\n  secrets: {AUTH_SECRETS: {secret: a, via: env}}\n",
        "",
        "functions.vm_isolate.secrets.AUTH_SECRETS.version: pin a version",
        id="env-secret-latest",
    ),
    pytest.param(
        "vm_isolate:\n  secrets: {AUTH_SECRETS: {secret: a, via: runtime}}\n",
        "",
        "functions.vm_isolate.secrets.AUTH_SECRETS.secret: a short name needs `project`",
        id="runtime-secret-without-project",
    ),
    pytest.param(
        "vm_isolate:\n  secrets: {AUTH_SECRETS: {secret: a, via: cloud}}\n",
        "",
        "functions.vm_isolate.secrets.AUTH_SECRETS.via: Input should be 'file', 'env' or 'runtime'",
        id="bad-secret-source",
    ),
    pytest.param(
        "vm_isolate: {egress: all}\n",
        "",
        "functions.vm_isolate.egress: needs a vpc_connector",
        id="egress-without-connector",
    ),
    pytest.param(
        "vm_isolate: {queue: q1}\nservice_down: {queue: q1}\n",
        "",
        "functions.service_down.queue: 'q1' is also vm_isolate's",
        id="queue-twice",
    ),
    pytest.param(
        "vm_isolate: {env: {AMQP_PUBLISH_TIMEOUT: soon}}\n",
        "",
        "functions.vm_isolate.env: invalid setting AMQP_PUBLISH_TIMEOUT: Input should be a "
        "valid number",
        id="bad-setting",
    ),
    pytest.param(
        "vm_isolate: {env: {AUTH_DISABLED: '1'}}\n",
        "",
        "functions.vm_isolate.env.AUTH_DISABLED: for local development only, never deployed",
        id="local-switch",
    ),
    pytest.param(
        "vm_isolate: {}\nvm_isolate: {}\n",
        "",
        "duplicate key 'vm_isolate'",
        id="entry-twice",
    ),
    pytest.param(
        "no_such_event: {}\n",
        "",
        "functions.no_such_event.source: functions/no_such_event/main.py does not exist",
        id="no-folder",
    ),
    pytest.param(
        "vm_isolate: {queue: amq.mine}\n",
        "",
        "functions.vm_isolate.queue: Value error, names starting with amq. are reserved",
        id="reserved-queue",
    ),
]


@pytest.mark.parametrize(("functions", "defaults", "expected"), ERRORS)
def test_an_invalid_manifest_names_the_entry_and_field(
    tmp_path: Path, functions: str, defaults: str, expected: str
) -> None:
    message = error_of(write(tmp_path, functions, defaults))

    assert expected in message
    assert message.startswith(str(tmp_path / "functions.yaml") + ": ")


def test_a_required_secret_missing_is_named(tmp_path: Path) -> None:
    path = tmp_path / "functions.yaml"
    path.write_text(
        "functions:\n"
        "  vm_isolate:\n"
        "    region: europe-west3\n"
        "    auth: {mode: bearer}\n"
        "    secrets: {AMQP_URL: {secret: url}}\n"
    )

    message = error_of(path)

    assert "functions.vm_isolate.service_account: required (here or in defaults)" in message
    assert "functions.vm_isolate.secrets.AUTH_SECRETS: required" in message
    assert "functions.vm_isolate.secrets.AMQP_URL: required" not in message
