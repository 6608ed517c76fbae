"""Manifest options: `senders` becomes the SENDER_* settings (and, when resolved alerts or test
notifications are forwarded, queues of their own); `cpu` takes only what Cloud Run offers."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.gcloud import runtime_env
from deploy.manifest import Function, ManifestError, load_manifest
from deploy.topology import plan

MANIFEST = """
defaults:
  region: europe-west3
  service_account: relay@my-gcp-project.iam.gserviceaccount.com
  auth: {mode: bearer}
  secrets:
    AMQP_URL: {secret: url}
    AMQP_CA_CERT: {secret: ca}
    AMQP_CLIENT_CERT: {secret: cert}
    AMQP_CLIENT_KEY: {secret: key}
    AUTH_SECRETS: {secret: auth}
functions:
  vm_isolate:
    source: functions/vm_isolate
%s
"""

SENDERS = """    senders:
      paths: [alertmanager, splunk]
      default: alertmanager
      forward_resolved: true
      forward_tests: true
      mappings:
        alertmanager: {reason: "alerts[].annotations.description", vm_id: null}
"""


def load(tmp_path: Path, senders: str) -> list[Function]:
    path = tmp_path / "functions.yaml"
    path.write_text(MANIFEST % senders)
    return load_manifest(path)


def test_senders_become_the_sender_settings(tmp_path: Path) -> None:
    [fn] = load(tmp_path, SENDERS)

    env = runtime_env(fn)

    assert env["SENDERS"] == "alertmanager,splunk"
    assert env["SENDER_DEFAULT"] == "alertmanager"
    assert env["SENDER_FORWARD_RESOLVED"] == "1"
    assert env["SENDER_FORWARD_TESTS"] == "1"
    assert env["SENDER_MAPPINGS"] == (
        '{"alertmanager":{"reason":"alerts[].annotations.description","vm_id":null}}'
    )


def test_default_senders_set_nothing(tmp_path: Path) -> None:
    [fn] = load(tmp_path, "")

    assert not [name for name in runtime_env(fn) if name.startswith("SENDER")]


def test_forwarded_resolved_alerts_and_tests_get_their_own_queues(tmp_path: Path) -> None:
    [fn] = load(tmp_path, SENDERS)

    binds = {(s.name, s.routing_key) for s in plan([fn]) if s.method == "queue.bind"}

    assert ("event-relay.vm_isolate", "vm.isolate") in binds
    assert ("event-relay.vm_isolate.resolved", "vm.isolate.resolved") in binds
    assert ("event-relay.vm_isolate.test", "vm.isolate.test") in binds


def test_unforwarded_tests_get_no_queue(tmp_path: Path) -> None:
    [fn] = load(tmp_path, SENDERS.replace("      forward_tests: true\n", ""))

    queues = {s.name for s in plan([fn]) if s.method == "queue.declare"}

    assert "event-relay.vm_isolate.resolved" in queues
    assert "event-relay.vm_isolate.test" not in queues


@pytest.mark.parametrize(
    ("senders", "named"),
    [
        ("    senders: {paths: [pagerduty]}\n", "functions.vm_isolate.senders.paths.0"),
        (
            "    senders: {mappings: {grafana: {reason: 'alerts[].labels.x | frobnicate'}}}\n",
            "functions.vm_isolate.senders",
        ),
        ("    env: {SENDERS: grafana}\n", "functions.vm_isolate.env.SENDERS"),
    ],
)
def test_bad_senders_name_the_entry_and_field(tmp_path: Path, senders: str, named: str) -> None:
    with pytest.raises(ManifestError, match=named.replace(".", r"\.")):
        load(tmp_path, senders)


@pytest.mark.parametrize("cpu", ["3", "1.5"])
def test_a_cpu_cloud_run_does_not_offer_is_refused(tmp_path: Path, cpu: str) -> None:
    with pytest.raises(ManifestError, match=r"functions\.vm_isolate\.cpu"):
        load(tmp_path, f"    cpu: {cpu}\n")
