"""Sender adapters: payloads in each sender's documented shape become canonical events."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from shared.adapters import Adapter, Candidate, Refusal
from shared.config import Settings
from shared.errors import ConfigError, NotFoundError, ValidationFailedError
from shared.routes import routes_for
from shared.schemas import DiskSpaceLow, Event, LoginBruteforce, ServiceDown, VmIsolate
from shared.vocabulary import SENDER_NAMES

SENDERS = Path(__file__).parent.parent / "events" / "senders"
MODELS: dict[str, type[Event]] = {
    "vm_isolate": VmIsolate,
    "disk_space_low": DiskSpaceLow,
    "service_down": ServiceDown,
    "login_bruteforce": LoginBruteforce,
}


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SENDERS / f"{name}.json").read_text())
    return loaded


def adapter(event_type: str, sender: str, **env: str) -> Adapter:
    found = routes_for(MODELS[event_type], Settings.from_env(env)).adapter_for(f"/{sender}")
    assert found is not None
    return found


def adapt(a: Adapter, document: dict[str, Any]) -> list[Event | Refusal]:
    candidates, _ = a.candidates(document)
    return [a.validate(c) for c in candidates]


def events(a: Adapter, document: dict[str, Any]) -> list[Event]:
    outcomes = adapt(a, document)
    assert all(isinstance(o, Event) for o in outcomes), outcomes
    return [o for o in outcomes if isinstance(o, Event)]


def errors(a: Adapter, document: dict[str, Any]) -> list[dict[str, Any]]:
    [refusal] = adapt(a, document)
    assert isinstance(refusal, Refusal)
    return refusal.errors


# --- each sender's documented payload ----------------------------------------------------


def test_alertmanager_gives_one_event_per_firing_alert_and_skips_resolved() -> None:
    a = adapter("vm_isolate", "alertmanager")
    candidates, skipped = a.candidates(sample("alertmanager"))

    assert [c.pointer for c in candidates] == ["/alerts/0", "/alerts/1"]
    assert skipped == [{"pointer": "/alerts/2", "reason": "resolved"}]
    first, second = (a.validate(c) for c in candidates)
    assert isinstance(first, VmIsolate)
    assert isinstance(second, VmIsolate)
    assert first.hostname == "web-01.prod.example.com"  # instance, :9100 stripped
    assert second.hostname == "db-07.prod.example.com"  # the hostname label wins
    assert (first.severity, second.severity) == ("critical", "critical")  # "page" is critical
    assert first.detected_at.isoformat() == "2026-11-25T07:30:00.123456+00:00"  # ns cut to µs
    assert first.source == "alertmanager"
    assert first.reason == first.summary == "Outbound connections to a known C2 server"
    assert first.details is not None
    assert first.details["fingerprint"] == "4e3bd8e5c1b3a7f2"
    assert first.details["labels"]["job"] == "node"


def test_node_exporter_labels_fill_disk_space_low() -> None:
    [event] = events(
        adapter("disk_space_low", "alertmanager"), sample("alertmanager_disk_space_low")
    )

    assert isinstance(event, DiskSpaceLow)
    assert (event.mount_point, event.used_percent, event.free_bytes) == ("/var/log", 93.5, 2**30)
    assert event.severity == "warning"


def test_grafana_reads_values_and_annotations() -> None:
    [event] = events(adapter("disk_space_low", "grafana"), sample("grafana"))

    assert isinstance(event, DiskSpaceLow)
    assert event.hostname == "fs-02.prod.example.com"
    assert (event.mount_point, event.used_percent, event.free_bytes) == ("/data", 97.2, 524288000)
    assert event.source == "grafana"
    assert event.details is not None
    assert event.details["dashboard_url"] == "https://grafana.example.com/d/disk?orgId=1"


def test_datadog_default_payload_is_refused_saying_where_a_host_was_looked_for() -> None:
    [error] = errors(adapter("vm_isolate", "datadog"), sample("datadog_default"))

    assert error == {
        "pointer": "",
        "type": "missing",
        "detail": "hostname: looked for hostname, host_name, host, alert_scope | tag(host), "
        "scope | tag(host), tags | tag(host); none held a usable value",
    }


def test_datadog_template_payload() -> None:
    [event] = events(adapter("vm_isolate", "datadog"), sample("datadog_template"))

    assert isinstance(event, VmIsolate)
    assert event.hostname == "web-01.prod.example.com"
    assert event.severity == "critical"  # P1
    assert event.detected_at.isoformat() == "2026-11-25T07:30:00+00:00"  # $DATE in ms
    assert event.reason.startswith("[Triggered on {host:web-01.prod.example.com}]")


def test_datadog_host_from_scope_when_hostname_is_empty() -> None:
    payload = {**sample("datadog_template"), "hostname": ""}

    [event] = events(adapter("vm_isolate", "datadog"), payload)

    assert event.hostname == "web-01.prod.example.com"


def test_datadog_recovery_is_skipped() -> None:
    payload = {**sample("datadog_template"), "alert_transition": "Recovered"}

    candidates, skipped = adapter("vm_isolate", "datadog").candidates(payload)

    assert (candidates, skipped) == ([], [{"pointer": "", "reason": "resolved"}])


def test_cloud_monitoring_incident() -> None:
    [event] = events(adapter("vm_isolate", "cloud-monitoring"), sample("cloud_monitoring"))

    assert isinstance(event, VmIsolate)
    assert event.hostname == "web-01"
    assert event.severity == "critical"
    assert event.reason == "c2-beaconing"  # the policy's user label
    assert event.detected_at.isoformat() == "2026-11-25T07:30:00+00:00"


def test_cloud_monitoring_falls_back_on_resource_name_then_instance_id() -> None:
    payload = copy.deepcopy(sample("cloud_monitoring"))
    del payload["incident"]["resource_display_name"]
    a = adapter("vm_isolate", "cloud-monitoring")
    assert events(a, payload)[0].hostname == "web-01"  # "prod-project web-01", last word

    del payload["incident"]["resource_name"]
    assert events(a, payload)[0].hostname == "11223344556677"


def test_cloud_monitoring_closed_incident_is_skipped() -> None:
    payload = copy.deepcopy(sample("cloud_monitoring"))
    payload["incident"]["state"] = "closed"

    assert adapter("vm_isolate", "cloud-monitoring").candidates(payload) == (
        [],
        [{"pointer": "", "reason": "resolved"}],
    )


def test_splunk_result_row_fills_login_bruteforce() -> None:
    [event] = events(adapter("login_bruteforce", "splunk"), sample("splunk"))

    assert isinstance(event, LoginBruteforce)
    assert event.hostname == "win-dc-02.corp.example.com"
    assert str(event.source_ip) == "198.51.100.23"  # CIM src
    assert (event.username, event.failed_attempts, event.window_seconds) == (
        "administrator",
        57,
        600,
    )
    assert event.severity == "critical"
    assert event.detected_at.isoformat() == "2026-11-25T08:30:00+01:00"


def test_splunk_multivalue_field_gives_its_first_value() -> None:
    payload = copy.deepcopy(sample("splunk"))
    payload["result"]["host"] = ["win-dc-02.corp.example.com", "win-dc-03.corp.example.com"]

    [event] = events(adapter("login_bruteforce", "splunk"), payload)

    assert event.hostname == "win-dc-02.corp.example.com"


# --- ids -------------------------------------------------------------------------------


def ids(candidates: list[Candidate]) -> list[str]:
    return [c.event_id for c in candidates]


def test_event_ids_are_deterministic_from_fingerprint_and_starts_at() -> None:
    a = adapter("vm_isolate", "alertmanager")
    first, _ = a.candidates(sample("alertmanager"))
    again, _ = adapter("vm_isolate", "alertmanager").candidates(sample("alertmanager"))
    later = sample("alertmanager")
    later["alerts"][0]["startsAt"] = "2026-11-25T09:00:00Z"
    relabelled = sample("alertmanager")
    relabelled["alerts"][0]["annotations"]["summary"] = "edited"
    after_edit, _ = a.candidates(relabelled)

    assert ids(first) == ids(again)
    assert len(set(ids(first))) == 2
    assert ids(a.candidates(later)[0])[0] != ids(first)[0]
    assert ids(after_edit) == ids(first)  # same fingerprint and startsAt: the same alert


def test_a_resolved_alert_gets_an_id_of_its_own_when_forwarded() -> None:
    payload = sample("alertmanager")
    payload["alerts"][2]["status"] = "firing"
    firing, _ = adapter("vm_isolate", "alertmanager").candidates(payload)
    forwarded, skipped = adapter(
        "vm_isolate", "alertmanager", SENDER_FORWARD_RESOLVED="1"
    ).candidates(sample("alertmanager"))

    assert skipped == []
    assert [c.kind for c in forwarded] == ["alert", "alert", "resolved"]
    assert forwarded[2].event_id != firing[2].event_id


# --- errors name the sender's fields ----------------------------------------------------


def test_a_missing_host_names_every_place_looked_in() -> None:
    payload = sample("alertmanager")
    del payload["alerts"][0]["labels"]["instance"]

    [refusal, event] = adapt(adapter("vm_isolate", "alertmanager"), payload)

    assert isinstance(event, VmIsolate)
    assert isinstance(refusal, Refusal)
    assert refusal.pointer == "/alerts/0"
    assert refusal.errors == [
        {
            "pointer": "/alerts/0",
            "type": "missing",
            "detail": "hostname: looked for alerts[0].labels.hostname, "
            "alerts[0].labels.host | strip_port, alerts[0].labels.nodename, "
            "alerts[0].labels.instance | strip_port, alerts[0].annotations.hostname, "
            "alerts[0].annotations.host | strip_port, alerts[0].annotations.nodename, "
            "alerts[0].annotations.instance | strip_port; none held a usable value",
        }
    ]


def test_an_unusable_value_points_at_the_sender_field_it_came_from() -> None:
    payload = sample("alertmanager")
    payload["alerts"][1]["labels"]["hostname"] = "db 07!"
    del payload["alerts"][1]["labels"]["instance"]

    [error] = errors(
        adapter("vm_isolate", "alertmanager"), {**payload, "alerts": payload["alerts"][1:2]}
    )

    assert error["pointer"] == "/alerts/0/labels/hostname"
    assert error["type"] == "value_error"
    assert error["detail"].startswith(
        "hostname: looked for alerts[0].labels.hostname (Value error, must be a DNS host name"
    )
    assert error["detail"].endswith("; none held a usable value")
    assert "db 07!" not in json.dumps(error)  # never echo the input


def test_validation_is_strict_unless_the_mapping_converts() -> None:
    mappings = {"alertmanager": {"used_percent": "alerts[].annotations.used_percent"}}
    a = adapter("disk_space_low", "alertmanager", SENDER_MAPPINGS=json.dumps(mappings))

    [error] = errors(a, sample("alertmanager_disk_space_low"))

    assert error["type"] == "float_type"
    assert error["pointer"] == "/alerts/0/annotations/used_percent"


def test_an_unconvertible_number_is_refused_naming_its_field() -> None:
    payload = sample("alertmanager_disk_space_low")
    payload["alerts"][0]["annotations"]["free_bytes"] = "lots"

    [error] = errors(adapter("disk_space_low", "alertmanager"), payload)

    assert error == {
        "pointer": "/alerts/0/annotations/free_bytes",
        "type": "int_type",
        "detail": "free_bytes: looked for alerts[0].labels.free_bytes | int, "
        "alerts[0].annotations.free_bytes | int (Input should be a valid integer); "
        "none held a usable value",
    }


def test_a_field_without_mapping_is_looked_for_under_its_own_name() -> None:
    payload = sample("alertmanager")
    payload["alerts"][0]["labels"]["vm_id"] = "vm-4711"
    payload["alerts"][0]["annotations"]["ip_address"] = "10.20.30.40"

    event = events(adapter("vm_isolate", "alertmanager"), payload)[0]

    assert isinstance(event, VmIsolate)
    assert (event.vm_id, str(event.ip_address)) == ("vm-4711", "10.20.30.40")


def test_a_batch_without_alerts_is_a_422() -> None:
    with pytest.raises(ValidationFailedError) as caught:
        adapter("vm_isolate", "alertmanager").candidates({"version": "4"})

    assert caught.value.errors == [
        {"pointer": "/alerts", "type": "missing", "detail": "alerts: looked for a list of alerts"}
    ]


# --- SENDER_MAPPINGS ----------------------------------------------------------------------


def test_mappings_override_the_defaults_field_by_field() -> None:
    mappings = {
        "alertmanager": {
            "hostname": [
                "alerts[].labels.vm_name | lower",
                "alerts[].labels.instance | strip_port",
            ],
            "source": "=prometheus-dc1",
            "summary": None,
        }
    }
    payload = sample("alertmanager")
    payload["alerts"][0]["labels"]["vm_name"] = "WEB-01-VM"
    a = adapter("vm_isolate", "alertmanager", SENDER_MAPPINGS=json.dumps(mappings))

    first, second = events(a, payload)

    assert (first.hostname, second.hostname) == ("web-01-vm", "10.20.30.47")
    assert first.source == "prometheus-dc1"
    assert first.summary == ""  # null dropped the default: the model's default applies
    assert first.severity == "critical"  # untouched defaults stay


def test_group_fields_are_reachable_from_each_alert() -> None:
    mappings = {"alertmanager": {"source": "receiver"}}
    a = adapter("vm_isolate", "alertmanager", SENDER_MAPPINGS=json.dumps(mappings))

    assert {e.source for e in events(a, sample("alertmanager"))} == {"event-relay-vm-isolate"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SENDER_MAPPINGS": "{"}, "not JSON"),
        ({"SENDER_MAPPINGS": '{"nagios": {}}'}, "unknown sender 'nagios'"),
        ({"SENDER_MAPPINGS": '{"splunk": {"colour": "result.c"}}'}, "has no field colour"),
        ({"SENDER_MAPPINGS": '{"splunk": {"reason": "result.r | shout"}}'}, "unknown transform"),
        ({"SENDER_MAPPINGS": '{"splunk": {"reason": "result..r"}}'}, "is not a path"),
        ({"SENDER_MAPPINGS": '{"splunk": {"reason": 5}}'}, "an expression is a string"),
        ({"SENDER_MAPPINGS": '{"splunk": {"reason": "alerts[].x"}}'}, "has none"),
        ({"SENDER_MAPPINGS": '["x"]'}, "must be"),
        ({"SENDER_DEFAULT": "zabbix"}, "SENDER_DEFAULT: unknown sender"),
        ({"SENDERS": "alertmanager,zabbix"}, "SENDERS: unknown sender"),
        ({"SENDER_FORWARD_RESOLVED": "yes"}, "SENDER_FORWARD_RESOLVED"),
        ({"SENDER_FORWARD_TESTS": "true"}, "SENDER_FORWARD_TESTS: must be 1 or 0"),
    ],
)
def test_bad_settings_stop_the_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        routes_for(VmIsolate, Settings.from_env(env))


# --- routes -------------------------------------------------------------------------------


def test_an_adapter_is_built_as_its_path_first_needs_it_unless_mappings_are_set() -> None:
    """Without SENDER_MAPPINGS a start builds no adapter (nothing the settings say can fail);
    with them, every adapter is built, and checked, at start."""
    lazy = routes_for(VmIsolate, Settings.from_env({}))
    assert lazy._adapters == {}
    first = lazy.adapter_for("/grafana")
    assert first is lazy.adapter_for("/grafana/")  # built once
    assert list(lazy._adapters) == ["grafana"]
    mappings = {"splunk": {"reason": "result.r"}}
    checked = routes_for(VmIsolate, Settings.from_env({"SENDER_MAPPINGS": json.dumps(mappings)}))
    assert sorted(checked._adapters) == sorted(SENDER_NAMES)


def test_paths_choose_the_format() -> None:
    routes = routes_for(VmIsolate, Settings.from_env({}))

    assert routes.adapter_for("/") is None  # the canonical schema
    for name in ("alertmanager", "grafana", "datadog", "cloud-monitoring", "splunk"):
        for path in (f"/{name}", f"/{name}/"):
            found = routes.adapter_for(path)
            assert found is not None
            assert found.sender.name == name
    for path in ("/nagios", "/alertmanager/x", "//alertmanager", "/Alertmanager"):
        with pytest.raises(NotFoundError):
            routes.adapter_for(path)


def test_senders_restricts_the_paths_and_sender_default_takes_the_root() -> None:
    routes = routes_for(
        VmIsolate, Settings.from_env({"SENDERS": "alertmanager", "SENDER_DEFAULT": "grafana"})
    )

    root = routes.adapter_for("/")
    assert root is not None
    assert root.sender.name == "grafana"
    assert routes.adapter_for("/alertmanager") is not None
    with pytest.raises(NotFoundError):
        routes.adapter_for("/splunk")


# --- severity words ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "path", "word", "expected"),
    [
        ("alertmanager", ("alerts", 0, "labels", "severity"), "critical", "critical"),
        ("alertmanager", ("alerts", 0, "labels", "severity"), "page", "critical"),
        ("alertmanager", ("alerts", 0, "labels", "severity"), "High", "critical"),
        ("alertmanager", ("alerts", 0, "labels", "severity"), "warning", "warning"),
        ("alertmanager", ("alerts", 0, "labels", "severity"), "info", "info"),
        ("alertmanager", ("alerts", 0, "labels", "severity"), "none", "info"),
        ("alertmanager", ("alerts", 0, "labels", "severity"), "sev-zero", "warning"),  # unknown
        ("grafana", ("alerts", 0, "labels", "severity"), "medium", "warning"),
        ("datadog", ("alert_priority",), "P3", "warning"),
        ("datadog", ("alert_priority",), "P5", "info"),
        ("datadog", ("alert_priority",), "", "critical"),  # then $ALERT_TYPE error
        ("cloud-monitoring", ("incident", "severity"), "Error", "critical"),
        ("cloud-monitoring", ("incident", "severity"), "Warning", "warning"),
        ("cloud-monitoring", ("incident", "severity"), "No severity", "info"),
        ("splunk", ("result", "severity"), "5", "critical"),
        ("splunk", ("result", "severity"), "3", "warning"),
        ("splunk", ("result", "severity"), "informational", "info"),
    ],
)
def test_severity_words_map_to_three_levels(
    sender: str, path: tuple[str | int, ...], word: str, expected: str
) -> None:
    name, event_type = {
        "alertmanager": ("alertmanager", "vm_isolate"),
        "grafana": ("grafana", "disk_space_low"),
        "datadog": ("datadog_template", "vm_isolate"),
        "cloud-monitoring": ("cloud_monitoring", "vm_isolate"),
        "splunk": ("splunk", "login_bruteforce"),
    }[sender]
    payload = sample(name)
    node: Any = payload
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = word

    assert events(adapter(event_type, sender), payload)[0].severity == expected
