"""vm_isolate end to end: functions-framework serves it, the TLS broker confirms each message."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from deploy.broker import BrokerNode
from deploy.function_process import FunctionProcess
from tests.e2e.conftest import EVENT, PROBLEM, Route, function_env, post_event

pytestmark = pytest.mark.usefixtures("empty_queue")


@pytest.fixture(scope="module")
def server(
    broker: BrokerNode, route: Route, start_function: Callable[..., FunctionProcess]
) -> FunctionProcess:
    return start_function("vm_isolate", function_env(broker, route.exchange))


def test_an_event_is_published_with_its_envelope_and_properties(
    server: FunctionProcess, route: Route
) -> None:
    response = post_event(server.url)

    assert response.status_code == 202
    answer = response.json()
    assert answer["routing_key"] == "vm.isolate"
    [message] = route.messages()
    assert message.routing_key == "vm.isolate"
    props = message.properties
    assert props.message_id == answer["id"]
    assert props.delivery_mode == 2
    assert props.content_type == "application/cloudevents+json"
    assert props.type == "event-relay.vm_isolate"
    assert props.app_id == "event-relay"
    assert abs(props.timestamp - time.time()) < 60
    envelope = message.body
    assert envelope["specversion"] == "1.0"
    assert envelope["id"] == answer["id"]
    assert envelope["type"] == "event-relay.vm_isolate"
    assert envelope["source"] == "/event-relay/vm_isolate"
    assert envelope["subject"] == "web-01.prod.example.com"
    assert envelope["datacontenttype"] == "application/json"
    assert envelope["time"].endswith("Z")
    assert envelope["data"] == {
        **EVENT,
        "hostname": "web-01.prod.example.com",
        "detected_at": "2026-11-25T08:30:00+01:00",
    }


def test_defaults_fill_the_optional_fields(server: FunctionProcess, route: Route) -> None:
    response = post_event(
        server.url, {"hostname": "db-7", "source": "zabbix", "reason": "ransomware"}
    )

    assert response.status_code == 202
    [message] = route.messages()
    data = message.body["data"]
    assert data["severity"] == "warning"
    assert data["summary"] == ""
    assert data["vm_id"] is None
    assert abs(time.time() - _parse_time(data["detected_at"])) < 60


def test_an_idempotency_key_becomes_the_message_id(server: FunctionProcess, route: Route) -> None:
    first = post_event(server.url, headers={"idempotency-key": "alert-42"})
    again = post_event(server.url, headers={"idempotency-key": "alert-42"})

    assert first.json()["id"] == again.json()["id"] == "alert-42"
    assert [m.properties.message_id for m in route.messages()] == ["alert-42", "alert-42"]


def _parse_time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


BAD_REQUESTS = [
    pytest.param("GET", {}, b"", 405, "method-not-allowed", id="method"),
    pytest.param(
        "POST",
        {"content-type": "text/plain"},
        None,
        415,
        "unsupported-media-type",
        id="content-type",
    ),
    pytest.param(
        "POST", {"content-type": ""}, None, 415, "unsupported-media-type", id="no-content-type"
    ),
    pytest.param(
        "POST",
        {"content-type": "application/json; charset=latin-1"},
        None,
        415,
        "unsupported-media-type",
        id="charset",
    ),
    pytest.param("POST", {}, b"x" * (256 * 1024 + 1), 413, "payload-too-large", id="oversize"),
    pytest.param("POST", {}, b'{"hostname": ', 400, "malformed-json", id="malformed"),
    pytest.param("POST", {}, b"[1, 2]", 400, "malformed-json", id="not-an-object"),
    pytest.param("POST", {}, b'{"a": 1, "a": 2}', 400, "malformed-json", id="duplicate-key"),
    pytest.param("POST", {}, b'{"a": NaN}', 400, "malformed-json", id="nan"),
    pytest.param("POST", {}, b'{"a": 1e999}', 400, "malformed-json", id="huge-number"),
    pytest.param(
        "POST", {}, b'{"a":' * 40 + b"1" + b"}" * 40, 400, "malformed-json", id="too-deep"
    ),
    pytest.param(
        "POST", {}, '{"hostname": "h\xe9"}'.encode("latin-1"), 400, "malformed-json", id="not-utf8"
    ),
]


@pytest.mark.parametrize(("method", "headers", "body", "status", "slug"), BAD_REQUESTS)
def test_bad_requests_get_a_problem_and_publish_nothing(
    server: FunctionProcess,
    route: Route,
    method: str,
    headers: dict[str, str],
    body: bytes | None,
    status: int,
    slug: str,
) -> None:
    content = json.dumps(EVENT).encode() if body is None else body
    response = httpx.request(
        method,
        server.url,
        content=content,
        headers={"content-type": "application/json", **headers},
        timeout=30,
    )

    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == f"urn:event-relay:problem:{slug}"
    assert problem["status"] == status
    assert problem["detail"]
    assert route.count() == 0
    if status == 405:
        assert response.headers["allow"] == "POST"


def test_an_oversize_chunked_body_is_refused(server: FunctionProcess, route: Route) -> None:
    def chunks() -> Any:
        for _ in range(40):
            yield b" " * 8192  # 320 KiB, no Content-Length

    response = httpx.post(
        server.url, content=chunks(), headers={"content-type": "application/json"}, timeout=30
    )

    assert response.status_code == 413
    assert route.count() == 0


@pytest.mark.parametrize(
    ("payload", "pointer", "error_type"),
    [
        pytest.param({**EVENT, "colour": "red"}, "/colour", "extra_forbidden", id="unknown-field"),
        pytest.param(
            {k: v for k, v in EVENT.items() if k != "hostname"},
            "/hostname",
            "missing",
            id="missing-hostname",
        ),
        pytest.param(
            {**EVENT, "hostname": "bad_host!"}, "/hostname", "value_error", id="bad-hostname"
        ),
        pytest.param(
            {**EVENT, "hostname": "a" * 300}, "/hostname", "string_too_long", id="long-hostname"
        ),
        pytest.param({**EVENT, "severity": "panic"}, "/severity", "literal_error", id="severity"),
        pytest.param(
            {**EVENT, "detected_at": "2026-11-25T08:30:00"},
            "/detected_at",
            "timezone_aware",
            id="naive-time",
        ),
        pytest.param(
            {**EVENT, "summary": "x" * 1001}, "/summary", "string_too_long", id="long-summary"
        ),
        pytest.param(
            {**EVENT, "details": {"blob": "x" * 17000}}, "/details", "value_error", id="big-details"
        ),
        pytest.param({**EVENT, "vm_id": "i-123"}, "/vm_id", "string_pattern_mismatch", id="vm-id"),
        pytest.param(
            {**EVENT, "ip_address": "10.0.0.300"}, "/ip_address", "ip_any_address", id="ip"
        ),
        pytest.param({**EVENT, "reason": 12}, "/reason", "string_type", id="wrong-type"),
        pytest.param(
            {**EVENT, "source": "a\r\nb"},
            "/source",
            "string_pattern_mismatch",
            id="control-characters",
        ),
    ],
)
def test_invalid_events_get_422_naming_the_field(
    server: FunctionProcess, route: Route, payload: dict[str, Any], pointer: str, error_type: str
) -> None:
    response = post_event(server.url, payload)

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "urn:event-relay:problem:validation-failed"
    assert {"pointer": pointer, "type": error_type} in [
        {"pointer": e["pointer"], "type": e["type"]} for e in problem["errors"]
    ]
    # The answer names the field, never echoes what was sent.
    assert "x" * 100 not in response.text
    assert route.count() == 0


def test_an_unroutable_message_is_a_503_not_a_202(
    broker: BrokerNode,
    make_route: Callable[[str], Route],
    start_function: Callable[..., FunctionProcess],
) -> None:
    elsewhere = make_route("nothing.bound.to.vm")
    server = start_function("vm_isolate", function_env(broker, elsewhere.exchange))

    response = post_event(server.url)

    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["type"] == "urn:event-relay:problem:unroutable"
    assert elsewhere.count() == 0


def test_a_missing_exchange_is_a_503(
    broker: BrokerNode, start_function: Callable[..., FunctionProcess]
) -> None:
    server = start_function("vm_isolate", function_env(broker, "no-such-exchange"))

    response = post_event(server.url)

    assert response.status_code == 503
    assert "retry-after" in response.headers


def test_sixteen_clients_get_exactly_one_message_per_202(
    server: FunctionProcess, route: Route
) -> None:
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(16) as pool:
        responses = list(
            pool.map(
                lambda n: client.post(
                    server.url,
                    json={**EVENT, "summary": f"alert {n}"},
                ),
                range(200),
            )
        )

    assert [r.status_code for r in responses] == [202] * 200
    accepted = {r.json()["id"] for r in responses}
    messages = route.messages()
    assert len(messages) == 200
    assert {m.properties.message_id for m in messages} == accepted
    assert {m.body["data"]["summary"] for m in messages} == {f"alert {n}" for n in range(200)}


def test_what_is_not_a_post_is_still_functions_frameworks(
    server: FunctionProcess, route: Route
) -> None:
    """POSTs go straight to the function (shared.http_server); anything else still through
    functions-framework's app: its own 404 for /robots.txt, and the function's 405 otherwise."""
    robots = httpx.get(server.url + "robots.txt", timeout=30)
    assert robots.status_code == 404
    assert robots.text == "Not Found"  # functions-framework's own answer, not a problem of ours
    other = httpx.get(server.url + "anything", timeout=30)
    assert other.status_code == 405
    assert other.headers["content-type"] == PROBLEM
    assert other.headers["allow"] == "POST"
    posted = post_event(server.url + "robots.txt")  # a POST is the function's: no such sender
    assert posted.status_code == 404
    assert posted.headers["content-type"] == PROBLEM
    assert post_event(server.url).status_code == 202
    assert route.count() == 1
