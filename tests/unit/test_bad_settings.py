"""Every entry point answers a setting that cannot work with one line naming it: no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deploy import REPO
from shared.config import Settings

BAD_SETTINGS = [
    pytest.param({"AMQP_PUBLISH_TIMEOUT": "soon"}, "AMQP_PUBLISH_TIMEOUT", id="not-a-number"),
    pytest.param({"SENDERS": "alertmanager,nagios"}, "SENDERS", id="unknown-sender"),
    pytest.param({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL", id="unknown-level"),
    pytest.param(
        {"AMQP_URL": "amqps://a:b@h/", "AMQP_URL_FILE": "/run/url"}, "AMQP_URL", id="two-sources"
    ),
    pytest.param(
        {"AMQP_ALLOW_PLAINTEXT": "1", "K_SERVICE": "vm-isolate"},
        "AMQP_ALLOW_PLAINTEXT",
        id="dev-switch-on-cloud-run",
    ),
]
ENTRY_POINTS = {
    "function": [
        sys.executable, "-m", "functions_framework", "--target", "vm_isolate",
        "--source", str(REPO / "functions" / "vm_isolate" / "main.py"), "--port", "1",
    ],
    "topology": [sys.executable, "-m", "deploy", "topology"],
    "tail": [sys.executable, "-m", "deploy", "tail"],
}  # fmt: skip


def run(argv: list[str], settings: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in Settings.variables()}
    env.update(PYTHONPATH=str(REPO), FUNCTION_USE_ASGI="1", **settings)
    return subprocess.run(
        argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
@pytest.mark.parametrize(("settings", "variable"), BAD_SETTINGS)
def test_a_bad_setting_is_one_line_naming_it(
    entry_point: str, settings: dict[str, str], variable: str
) -> None:
    done = run(ENTRY_POINTS[entry_point], settings)

    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 1, output
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1, output
    assert variable in output
    for value in settings.values():  # a value may be a secret: never echoed
        if value not in ("1", variable):
            assert value not in output
