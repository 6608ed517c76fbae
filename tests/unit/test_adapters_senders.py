"""Each sender, as it really sends: unusable values fall through to the next place, a request
with no usable host is a 422 naming every place looked in, and test notifications never act."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_adapters_pipeline import FakePublisher, client

SENDERS = Path(__file__).parent.parent / "events" / "senders"
DELETE = object()
HOSTNAME_ERROR = "Value error, must be a DNS host name or FQDN (RFC 1123), at most 253 characters"

# Where each sender's host is looked for, in the order docs/senders.md gives ("[0]" for a batch).
HOST_PLACES = {
    "alertmanager": [
        f"alerts[0].{kind}.{place}"
        for kind in ("labels", "annotations")
        for place in ("hostname", "host | strip_port", "nodename", "instance | strip_port")
    ],
    "datadog": [
        "hostname",
        "host_name",
        "host",
        "alert_scope | tag(host)",
        "scope | tag(host)",
        "tags | tag(host)",
    ],
    "cloud-monitoring": [
        "incident.resource_display_name",
        "incident.metric.labels.instance_name",
        "incident.resource.labels.instance_name",
        "incident.metric.labels.host",
        "incident.resource.labels.host",
        "incident.resource_name | last_word",
        "incident.resource.labels.instance_id",
    ],
    "splunk": [f"result.{name} | first" for name in ("hostname", "host", "dest", "src")],
}
HOST_PLACES["grafana"] = HOST_PLACES["alertmanager"]


def sample(name: str, **changes: Any) -> dict[str, Any]:
    """tests/events/senders/<name>.json, with `changes` ("a.0.b": value, or DELETE) applied."""
    document: dict[str, Any] = json.loads((SENDERS / f"{name}.json").read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node: Any = document
        for step in parents:
            node = node[int(step)] if isinstance(node, list) else node.setdefault(step, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = copy.deepcopy(value)  # later changes must not reach the caller's
    if isinstance(document.get("alerts"), list):
        document["alerts"] = document["alerts"][:1]
    return document


def published(publisher: FakePublisher) -> list[dict[str, Any]]:
    return [json.loads(m.body) for m in publisher.published]


# --- a value the field cannot take: the next place is tried ---------------------------------


@pytest.mark.parametrize(
    ("sender", "payload", "field", "expected"),
    [
        (  # a hostname label that is no host name: instance, its port taken off
            "alertmanager",
            sample("alertmanager", **{"alerts.0.labels.hostname": "not a host!"}),
            "hostname",
            "web-01.prod.example.com",
        ),
        (  # an instance that is a description: the nodename annotation
            "grafana",
            sample(
                "grafana",
                **{
                    "alerts.0.labels.instance": "fs 02 (primary)",
                    "alerts.0.annotations.nodename": "fs-02.prod.example.com",
                },
            ),
            "hostname",
            "fs-02.prod.example.com",
        ),
        (  # $HOSTNAME rendered as a sentence: the host: tag of $ALERT_SCOPE
            "datadog",
            sample("datadog_alert_scope", **{"hostname": "i-0b91 (terminated)", "tags": DELETE}),
            "hostname",
            "i-0b91c7113c5aae6e1",
        ),
        (  # "<project> VM Instance labels {...}": its last word is no host; instance_id is
            "cloud-monitoring",
            sample("cloud_monitoring_vm_labels", **{"incident.metric.labels": {}}),
            "hostname",
            "11223344556677",
        ),
        (  # a hostname field of "n/a": the event's own host
            "splunk",
            sample("splunk", **{"result.hostname": "n/a"}),
            "hostname",
            "win-dc-02.corp.example.com",
        ),
        (  # a reason annotation with a control character: the summary
            "alertmanager",
            sample("alertmanager", **{"alerts.0.annotations.reason": "\x00"}),
            "reason",
            "Outbound connections to a known C2 server",
        ),
    ],
)
def test_an_unusable_value_goes_on_to_the_next_place(
    sender: str, payload: dict[str, Any], field: str, expected: Any
) -> None:
    publisher = FakePublisher()

    response = client(publisher).post(f"/{sender}", json=payload)

    assert response.status_code == 202, response.text
    [message] = published(publisher)
    assert message["data"][field] == expected


def test_a_number_field_skips_a_label_that_is_no_number() -> None:
    payload = sample("alertmanager_disk_space_low", **{"alerts.0.labels.used_percent": "high"})
    publisher = FakePublisher()

    response = client(publisher, "disk_space_low").post("/alertmanager", json=payload)

    assert response.status_code == 202, response.text
    assert [m["data"]["used_percent"] for m in published(publisher)] == [93.5]


# --- nothing usable: a 422 naming every place, never an invented value ---------------------


@pytest.mark.parametrize(
    ("sender", "payload", "refused", "pointer"),
    [
        (
            "alertmanager",
            sample(
                "alertmanager",
                **{"alerts.0.labels.hostname": "not a host!", "alerts.0.labels.instance": DELETE},
            ),
            {"alerts[0].labels.hostname"},
            "/alerts/0/labels/hostname",
        ),
        (
            "grafana",
            sample("grafana", **{"alerts.0.labels.instance": "fs 02 (primary):9100"}),
            {"alerts[0].labels.instance | strip_port"},
            "/alerts/0/labels/instance",
        ),
        (
            "datadog",
            sample(
                "datadog_template",
                **{"hostname": "web 01!", "scope": "env:prod", "tags": "env:prod,role:web"},
            ),
            {"hostname"},
            "/hostname",
        ),
        (  # the resource_name of gce_instance incidents, and no instance_id
            "cloud-monitoring",
            sample(
                "cloud_monitoring_vm_labels",
                **{"incident.metric.labels": {}, "incident.resource.labels.instance_id": DELETE},
            ),
            {"incident.resource_name | last_word"},
            "/incident/resource_name",
        ),
        (
            "splunk",
            sample(
                "splunk",
                **{
                    "result.hostname": "n/a",
                    "result.host": DELETE,
                    "result.dest": "-",
                    "result.src": DELETE,
                },
            ),
            {"result.hostname | first", "result.dest | first"},
            "/result/dest",
        ),
    ],
)
def test_no_usable_host_is_a_422_naming_every_place_looked_in(
    sender: str, payload: dict[str, Any], refused: set[str], pointer: str
) -> None:
    publisher = FakePublisher()

    response = client(publisher).post(f"/{sender}", json=payload)

    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    places = [f"{p} ({HOSTNAME_ERROR})" if p in refused else p for p in HOST_PLACES[sender]]
    assert error == {
        "pointer": pointer,  # the last value refused
        "type": "value_error",
        "detail": f"hostname: looked for {', '.join(places)}; none held a usable value",
    }
    assert publisher.published == []


def test_an_unusable_optional_value_is_refused_not_dropped() -> None:
    payload = sample("alertmanager", **{"alerts.0.labels.vm_id": "the web VM"})
    publisher = FakePublisher()

    response = client(publisher).post("/alertmanager", json=payload)

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["pointer"] == "/alerts/0/labels/vm_id"
    assert error["type"] == "string_pattern_mismatch"
    assert error["detail"].startswith("vm_id: looked for alerts[0].labels.vm_id (String should")
    assert publisher.published == []


# --- test notifications ---------------------------------------------------------------------

# Each sender's test notification (tests/events/senders/SOURCES.md says where each shape is
# from) and where its alert is.
TESTS = [
    ("alertmanager", "alertmanager_test", "/alerts/0"),
    ("grafana", "grafana_test", "/alerts/0"),
    ("datadog", "datadog_test", ""),
    ("cloud-monitoring", "cloud_monitoring_test", ""),
    ("splunk", "splunk_test", ""),
]


@pytest.mark.parametrize(("sender", "name", "pointer"), TESTS)
def test_a_test_notification_is_skipped_and_publishes_nothing(
    sender: str, name: str, pointer: str
) -> None:
    publisher = FakePublisher()

    response = client(publisher).post(f"/{sender}", json=sample(name))

    assert response.status_code == 202, response.text
    assert response.json() == {
        "ids": [],
        "routing_key": "vm.isolate",
        "refused": [],
        "skipped": [{"pointer": pointer, "reason": "test-notification"}],
        "delivery": {},  # nothing to deliver
    }
    assert publisher.published == []


@pytest.mark.parametrize(
    ("sender", "name", "host"),
    [
        ("alertmanager", "alertmanager_test", "alertmanager"),
        ("grafana", "grafana_test", "grafana"),
        ("datadog", "datadog_test", "web-01.prod.example.com"),
        ("splunk", "splunk_test", "win-dc-02.corp.example.com"),
    ],
)
def test_a_forwarded_test_notification_is_one_message_under_test(
    sender: str, name: str, host: str
) -> None:
    publisher = FakePublisher()

    response = client(publisher, SENDER_FORWARD_TESTS="1").post(f"/{sender}", json=sample(name))

    assert response.status_code == 202, response.text
    [message] = publisher.published
    assert message.routing_key == "vm.isolate.test"
    assert message.properties.type == "event-relay.vm_isolate.test"
    assert json.loads(message.body)["data"]["hostname"] == host
    assert response.json()["ids"] == [message.id]
    assert response.json()["skipped"] == []


def test_cloud_monitorings_test_names_no_host_so_forwarding_skips_it_saying_why() -> None:
    """Its test incident is about "Example Resource": a 202 still, never a refused alert."""
    publisher = FakePublisher()

    response = client(publisher, SENDER_FORWARD_TESTS="1").post(
        "/cloud-monitoring", json=sample("cloud_monitoring_test")
    )

    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["ids"], answer["refused"]) == ([], [])
    [skip] = answer["skipped"]
    assert skip["reason"] == "test-notification"
    assert [e["detail"].split(":")[0] for e in skip["errors"]] == ["hostname"]
    assert publisher.published == []


@pytest.mark.parametrize(
    ("sender", "payload"),
    [  # a custom Grafana test renaming its alert: still its test button's group key
        ("grafana", sample("grafana_test", **{"alerts.0.labels.alertname": "CompromisedHost"})),
        ("datadog", sample("datadog_test", **{"title": "[Triggered] Crypto-miner"})),  # the body
        ("datadog", sample("datadog_template", title="[TEST] Crypto-miner process running")),
        ("alertmanager", sample("alertmanager", **{"alerts.0.labels.alertname": "TestAlert"})),
    ],
)
def test_other_signs_of_a_test(sender: str, payload: dict[str, Any]) -> None:
    publisher = FakePublisher()

    response = client(publisher).post(f"/{sender}", json=payload)

    assert response.status_code == 202
    assert [s["reason"] for s in response.json()["skipped"]] == ["test-notification"]
    assert publisher.published == []


@pytest.mark.parametrize(
    ("sender", "payload"),
    [  # look-alikes that are real alerts
        ("grafana", sample("grafana", groupKey='{}/{severity="critical"}:{alertname="Low"}')),
        ("datadog", sample("datadog_template", title="[Triggered] [TEST] Crypto-miner")),
        ("cloud-monitoring", sample("cloud_monitoring", version="1.2")),
        ("splunk", sample("splunk", search_name="TestAlert on DC")),
    ],
)
def test_a_real_alert_that_looks_like_a_test_is_published(
    sender: str, payload: dict[str, Any]
) -> None:
    publisher = FakePublisher()

    response = client(publisher).post(f"/{sender}", json=payload)

    assert response.status_code == 202, response.text
    assert response.json()["skipped"] == []
    assert len(publisher.published) == 1


def test_a_resolved_test_is_a_test() -> None:
    payload = sample("grafana_test", **{"alerts.0.status": "resolved"})

    response = client(FakePublisher(), SENDER_FORWARD_RESOLVED="1").post("/grafana", json=payload)

    assert response.json()["skipped"] == [{"pointer": "/alerts/0", "reason": "test-notification"}]


def test_a_batch_with_a_test_among_alerts_publishes_the_alerts() -> None:
    payload = sample("alertmanager")
    payload["alerts"] = [*json.loads((SENDERS / "alertmanager.json").read_text())["alerts"]]
    payload["alerts"][1]["labels"]["alertname"] = "TestAlert"
    publisher = FakePublisher()

    response = client(publisher).post("/alertmanager", json=payload)

    assert response.status_code == 202
    assert response.json()["skipped"] == [
        {"pointer": "/alerts/1", "reason": "test-notification"},
        {"pointer": "/alerts/2", "reason": "resolved"},
    ]
    assert [m["data"]["hostname"] for m in published(publisher)] == ["web-01.prod.example.com"]
