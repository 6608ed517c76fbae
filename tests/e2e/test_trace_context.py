"""Trace context end to end: the caller's trace reaches the message, and the log line names the
function's span in it, so the orchestrator's logs can be joined to the function's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy.broker import BrokerNode
from deploy.function_process import FunctionProcess
from tests.e2e.conftest import EVENTS, Route, free_port, function_env, post_event, sample_event

TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
PROJECT = "relay-trace-project"

pytestmark = pytest.mark.usefixtures("empty_queue")


@pytest.fixture(scope="module")
def served(broker: BrokerNode, route: Route, tmp_path_factory: pytest.TempPathFactory) -> Any:
    log = tmp_path_factory.mktemp("trace") / "function.log"
    env = function_env(broker, route.exchange, GOOGLE_CLOUD_PROJECT=PROJECT)
    with FunctionProcess("vm_isolate", free_port(), env, log_path=log) as server:
        yield server, log


def request_record(log: Path, event_id: str) -> dict[str, Any]:
    for line in log.read_text().splitlines():
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("logger") == "event_relay.request" and record.get("event_id") == event_id:
            return record
    raise AssertionError(f"no request line for {event_id}")


@pytest.mark.parametrize(
    ("headers", "sampled"),
    [
        ({"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "congo=t61rcWkgMzE"}, True),
        ({"x-cloud-trace-context": f"{TRACE}/123456789;o=0"}, False),
    ],
    ids=["traceparent", "x-cloud-trace-context"],
)
def test_the_callers_trace_is_on_the_message_and_in_the_log_line(
    served: tuple[FunctionProcess, Path],
    route: Route,
    headers: dict[str, str],
    sampled: bool,
) -> None:
    server, log = served

    response = post_event(server.url, headers=headers)

    assert response.status_code == 202, response.text
    [message] = route.messages()
    traceparent = message.properties.headers["traceparent"]
    version, trace_id, span_id, flags = traceparent.split("-")
    assert (version, trace_id, flags) == ("00", TRACE, "01" if sampled else "00")
    assert span_id != PARENT  # the function's own span, child of the caller's
    assert message.body["traceparent"] == traceparent  # the CloudEvent's extension attribute
    assert message.properties.headers.get("tracestate") == headers.get("tracestate")
    assert message.body.get("tracestate") == headers.get("tracestate")
    record = request_record(log, response.json()["id"])
    assert record["logging.googleapis.com/trace"] == f"projects/{PROJECT}/traces/{TRACE}"
    assert record["logging.googleapis.com/spanId"] == span_id
    assert record["logging.googleapis.com/trace_sampled"] is sampled


def test_without_a_trace_the_message_carries_none(
    served: tuple[FunctionProcess, Path], route: Route
) -> None:
    server, log = served

    response = post_event(server.url, sample_event("vm_isolate"))

    [message] = route.messages()
    assert message.properties.headers is None
    assert "traceparent" not in message.body
    assert "logging.googleapis.com/trace" not in request_record(log, response.json()["id"])


def test_every_message_of_a_sender_batch_carries_the_trace(
    served: tuple[FunctionProcess, Path], route: Route
) -> None:
    server, _log = served
    batch = json.loads((EVENTS / "senders" / "alertmanager.json").read_text())

    response = post_event(
        f"{server.url}alertmanager", batch, headers={"traceparent": f"00-{TRACE}-{PARENT}-01"}
    )

    assert response.status_code == 202, response.text
    messages = route.messages()
    assert len(messages) == len(response.json()["ids"]) > 1
    assert {m.properties.headers["traceparent"].split("-")[1] for m in messages} == {TRACE}
