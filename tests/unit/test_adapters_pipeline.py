"""The pipeline on sender paths: one message per alert, published together, answered once."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, cast

import pytest
from starlette.requests import Request
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from shared.config import Settings
from shared.delivery import Deliverer
from shared.envelope import Message
from shared.errors import PublishTimeoutError
from shared.pipeline import Relay
from shared.publisher import Publisher
from shared.routes import routes_for
from shared.schemas import EVENT_TYPES

SENDERS = Path(__file__).parent.parent / "events" / "senders"
CANONICAL = json.loads((Path(__file__).parent.parent / "events" / "vm_isolate.json").read_text())
BATCH = json.loads((SENDERS / "alertmanager.json").read_text())


class FakePublisher:
    """Confirms after a short wait, fails the hosts it is told to, counts what is in flight."""

    def __init__(self, failing: str | None = None) -> None:
        self.published: list[Message] = []
        self.in_flight = self.most_in_flight = 0
        self.failing = failing

    async def publish(self, message: Message) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        if self.failing and json.loads(message.body)["subject"] == self.failing:
            raise PublishTimeoutError("no confirm")
        self.published.append(message)


class _Open:
    async def verify(self, headers: Any, query: Any, body: bytes) -> None:
        return None


def client(publisher: FakePublisher, event_type: str = "vm_isolate", **env: str) -> TestClient:
    model = EVENT_TYPES[event_type]
    relay = Relay(
        model,
        authenticator=_Open(),
        deliverer=Deliverer(cast(Publisher, publisher)),
        max_body_bytes=256 * 1024,
        routes=routes_for(model, Settings.from_env(env)),
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await relay.handle(Request(scope, receive))
        await response(scope, receive, send)

    return TestClient(app)


def test_a_batch_is_one_message_per_firing_alert_published_together() -> None:
    publisher = FakePublisher()

    response = client(publisher).post("/alertmanager", json=BATCH)

    assert response.status_code == 202
    answer = response.json()
    assert answer["routing_key"] == "vm.isolate"
    assert answer["skipped"] == [{"pointer": "/alerts/2", "reason": "resolved"}]
    assert answer["refused"] == []
    assert [m.id for m in publisher.published] == answer["ids"]
    assert len(set(answer["ids"])) == 2
    assert publisher.most_in_flight == 2  # concurrently, not one after the other
    hosts = [json.loads(m.body)["data"]["hostname"] for m in publisher.published]
    assert hosts == ["web-01.prod.example.com", "db-07.prod.example.com"]
    assert {m.routing_key for m in publisher.published} == {"vm.isolate"}


def test_a_retried_batch_gets_the_same_ids() -> None:
    first = client(FakePublisher()).post("/alertmanager", json=BATCH).json()["ids"]
    again = client(FakePublisher()).post("/alertmanager", json=BATCH).json()["ids"]

    assert first == again


def test_one_unconfirmed_alert_makes_the_whole_batch_a_503() -> None:
    publisher = FakePublisher(failing="db-07.prod.example.com")

    response = client(publisher).post("/alertmanager", json=BATCH)

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["type"] == "urn:event-relay:problem:publish-timeout"


def test_valid_alerts_are_published_and_the_answer_lists_those_refused() -> None:
    payload = json.loads(json.dumps(BATCH))
    del payload["alerts"][1]["labels"]["hostname"]
    del payload["alerts"][1]["labels"]["instance"]
    publisher = FakePublisher()

    response = client(publisher).post("/alertmanager", json=payload)

    assert response.status_code == 202
    answer = response.json()
    assert len(answer["ids"]) == 1
    assert [m.id for m in publisher.published] == answer["ids"]
    [refused] = answer["refused"]
    assert refused["pointer"] == "/alerts/1"
    assert refused["errors"][0]["type"] == "missing"
    assert refused["errors"][0]["detail"].startswith("hostname: looked for alerts[1].labels")


def test_a_batch_with_no_valid_alert_is_a_422_naming_each_alert() -> None:
    payload = json.loads(json.dumps(BATCH))
    for alert in payload["alerts"]:
        alert["labels"]["hostname"] = "not a host!"
        del alert["labels"]["instance"]
    publisher = FakePublisher()

    response = client(publisher).post("/alertmanager", json=payload)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:event-relay:problem:validation-failed"
    assert [e["pointer"] for e in problem["errors"]] == [
        "/alerts/0/labels/hostname",
        "/alerts/1/labels/hostname",
    ]
    assert publisher.published == []


@pytest.mark.parametrize(
    ("field", "given"),
    [
        ("instance", "http://[::1"),
        ("instance", "http://[abc]:80"),
        ("startsAt", "99999999999999999999"),
        ("startsAt", 99999999999999999999),
    ],
)
def test_a_hostile_value_is_a_422_not_a_500(field: str, given: Any) -> None:
    payload = json.loads(json.dumps(BATCH))
    payload["alerts"] = payload["alerts"][:1]
    alert = payload["alerts"][0]
    (alert["labels"] if field == "instance" else alert)[field] = given
    publisher = FakePublisher()

    response = client(publisher).post("/alertmanager", json=payload)

    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == "urn:event-relay:problem:validation-failed"
    assert [e["pointer"] for e in problem["errors"]] == [
        "/alerts/0/labels/instance" if field == "instance" else "/alerts/0/startsAt"
    ]
    assert publisher.published == []


def test_resolved_alerts_can_be_forwarded_under_their_own_routing_key() -> None:
    publisher = FakePublisher()

    response = client(publisher, SENDER_FORWARD_RESOLVED="1").post("/alertmanager", json=BATCH)

    assert response.status_code == 202
    assert response.json()["skipped"] == []
    resolved = publisher.published[2]
    assert resolved.routing_key == "vm.isolate.resolved"
    assert resolved.properties.type == "event-relay.vm_isolate.resolved"
    assert json.loads(resolved.body)["data"]["details"]["status"] == "resolved"


def test_only_resolved_alerts_is_a_202_with_nothing_published() -> None:
    payload = {**BATCH, "alerts": BATCH["alerts"][2:]}
    publisher = FakePublisher()

    response = client(publisher).post("/alertmanager", json=payload)

    assert response.status_code == 202
    assert response.json()["ids"] == []
    assert publisher.published == []


def test_unknown_paths_are_404_problems() -> None:
    response = client(FakePublisher()).post("/nagios", json=BATCH)

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:event-relay:problem:not-found"


def test_the_canonical_path_is_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    publisher = FakePublisher()

    with caplog.at_level(logging.INFO, logger="event_relay.request"):
        response = client(publisher).post("/", json=CANONICAL)

    assert response.status_code == 202
    assert set(response.json()) == {"id", "routing_key", "delivery"}
    assert response.json()["delivery"] == "confirmed"  # no spool: the broker confirmed it
    [record] = [r for r in caplog.records if r.name == "event_relay.request"]
    assert not hasattr(record, "sender")
    assert record.event_id == response.json()["id"]  # type: ignore[attr-defined]


def test_a_sender_request_logs_one_line_with_its_ids(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="event_relay.request"):
        answer = client(FakePublisher()).post("/alertmanager", json=BATCH).json()

    [record] = [r for r in caplog.records if r.name == "event_relay.request"]
    extra = record.__dict__
    assert extra["sender"] == "alertmanager"
    assert extra["event_ids"] == answer["ids"]
    assert extra["skipped"] == [{"pointer": "/alerts/2", "reason": "resolved"}]
    assert extra["refused"] == []
    assert extra["status"] == 202


@pytest.mark.parametrize(
    ("path", "sample"),
    [
        ("/grafana", "grafana"),
        ("/datadog", "datadog_template"),
        ("/cloud-monitoring", "cloud_monitoring"),
        ("/splunk", "splunk"),
    ],
)
def test_each_sender_path_publishes(path: str, sample: str) -> None:
    payload = json.loads((SENDERS / f"{sample}.json").read_text())
    publisher = FakePublisher()

    response = client(publisher).post(path, json=payload)

    assert response.status_code == 202, response.text
    assert len(publisher.published) == 1
