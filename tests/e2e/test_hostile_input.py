"""Hostile input: each gets a clear 4xx, publishes nothing and never causes a 500.

test_vm_isolate.py covers the basics (405, 413, 415, malformed JSON, an array, duplicate keys,
NaN, 1e999, deep nesting, latin-1, unknown fields); this adds the rest, then a property-based
test sends random JSON and random bytes to every function under functions/.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pika.adapters.blocking_connection import BlockingChannel
from standardwebhooks import Webhook

from deploy.broker import BrokerNode
from deploy.function_process import FunctionProcess
from shared.schemas import EVENT_TYPES
from tests.e2e.conftest import (
    EVENT,
    EVENTS,
    PROBLEM,
    Route,
    function_env,
    post_event,
    sample_event,
)

MAX_BODY = 4096  # MAX_BODY_BYTES of the servers here: oversize tests stay small
WHSEC = "whsec_" + base64.b64encode(b"hostile-input-signing-key-01").decode()


pytestmark = pytest.mark.usefixtures("empty_queue")


def function_names() -> list[str]:
    """Every event function: a new event type is covered without editing this test (the drain,
    which takes no alerts, has its own in test_spool.py)."""
    return sorted(EVENT_TYPES)


@pytest.fixture(scope="module")
def route(make_route: Callable[[str], Route]) -> Route:
    """A queue bound to every routing key of the function's exchange: catches anything."""
    return make_route("#")


@pytest.fixture(scope="module")
def server(
    broker: BrokerNode, route: Route, start_function: Callable[..., FunctionProcess]
) -> FunctionProcess:
    env = function_env(broker, route.exchange, MAX_BODY_BYTES=str(MAX_BODY))
    return start_function("vm_isolate", env)


@pytest.fixture(scope="module")
def signed_server(
    broker: BrokerNode, route: Route, start_function: Callable[..., FunctionProcess]
) -> FunctionProcess:
    env = function_env(broker, route.exchange, AUTH_MODE="standard-webhooks", AUTH_SECRETS=WHSEC)
    del env["AUTH_DISABLED"]
    return start_function("vm_isolate", env)


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == status
    if slug is not None:
        assert problem["type"] == f"urn:event-relay:problem:{slug}"


POST_HEAD = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def raw_post(
    port: int, header_lines: bytes, body: bytes, *, content_length: bool = True
) -> tuple[int, bytes]:
    """POST `body` with raw header lines (each ending in CRLF) that no HTTP client would send;
    a Content-Length for the body is added unless the lines frame the body themselves."""
    length = b"Content-Length: %d\r\n" % len(body) if content_length else b""
    return raw_request(port, POST_HEAD + header_lines + length + b"\r\n", body)


def raw_request(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send bytes no HTTP client would; the status line's code and the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head + body)
        answer = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer and _complete(answer):
                break
    return int(answer.split(b" ", 2)[1]), answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


# --- the body ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'"just a string"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"null", id="null"),
        pytest.param(b"true", id="true"),
        pytest.param(b"", id="empty"),
        pytest.param(b"   ", id="whitespace"),
        pytest.param(b'{"hostname": "a"} {"hostname": "b"}', id="two-documents"),
        pytest.param(b'{"hostname": "a"}\x00', id="trailing-nul"),
        pytest.param(b'{"a": Infinity}', id="infinity"),
        pytest.param(b'{"a": -Infinity}', id="minus-infinity"),
        pytest.param(b'{"a": ' + b"9" * 41 + b"}", id="huge-integer"),
        pytest.param(b'{"a": 0.' + b"1" * 60 + b"}", id="long-float"),
        pytest.param(b'{"a": 1e400}', id="float-overflow"),
        pytest.param(b'{"a": -1e400}', id="negative-overflow"),
        pytest.param(b'{"a": 1, "b": {"c": 1, "c": 2}}', id="nested-duplicate"),
        pytest.param(b'{"a": ' + b"[" * 33 + b"]" * 33 + b"}", id="deep-arrays"),
        pytest.param(b"[" * (MAX_BODY - 1), id="very-deep-unclosed"),
        pytest.param(b'{"a": ' + b"[" * 2000 + b"]" * 2000 + b"}", id="recursion-bomb"),
        pytest.param(b"\xef\xbb\xbf" + json.dumps(EVENT).encode(), id="utf8-bom"),
        pytest.param(json.dumps(EVENT).encode("utf-16"), id="utf-16"),
        pytest.param(b'{"hostname": "\xc3\x28"}', id="invalid-utf8-sequence"),
        pytest.param(b'{"hostname": "\xed\xa0\x80"}', id="encoded-surrogate"),
        pytest.param(b"{'hostname': 'single-quotes'}", id="single-quotes"),
        pytest.param(b'{"a": 1,}', id="trailing-comma"),
        pytest.param(b'{"a": 01}', id="leading-zero"),
        pytest.param(b'{"a": "\x01"}', id="raw-control-character"),
    ],
)
def test_bodies_that_are_not_one_strict_json_object_are_a_400(
    server: FunctionProcess, route: Route, body: bytes
) -> None:
    assert_problem(post_event(server.url, body), 400, "malformed-json")
    assert route.count() == 0


def test_a_body_at_the_limit_is_read_and_one_byte_more_is_a_413(
    server: FunctionProcess, route: Route
) -> None:
    at_limit = b'{"hostname": "' + b"a" * (MAX_BODY - 16) + b'"}'
    assert len(at_limit) == MAX_BODY

    assert_problem(post_event(server.url, at_limit), 422, "validation-failed")
    assert_problem(post_event(server.url, at_limit + b" "), 413, "payload-too-large")
    assert route.count() == 0


def test_a_declared_length_over_the_limit_is_refused_before_the_body_arrives(
    server: FunctionProcess, route: Route
) -> None:
    started = time.monotonic()

    status, answer = raw_post(
        server.port, b"Content-Length: 10000000000\r\n", b"{", content_length=False
    )

    assert status == 413
    assert b"payload-too-large" in answer
    assert time.monotonic() - started < 5  # it did not wait for ten gigabytes
    assert route.count() == 0


@pytest.mark.parametrize("chunk_size", [1, 512, 4097])
def test_an_oversize_chunked_body_is_a_413_whatever_the_chunk_size(
    server: FunctionProcess, route: Route, chunk_size: int
) -> None:
    def chunks() -> Iterator[bytes]:
        sent = 0
        while sent <= MAX_BODY:
            yield b" " * chunk_size
            sent += chunk_size

    response = httpx.post(
        server.url, content=chunks(), headers={"content-type": "application/json"}, timeout=30
    )

    assert_problem(response, 413, "payload-too-large")
    assert route.count() == 0


def test_a_small_chunked_event_is_accepted(server: FunctionProcess, route: Route) -> None:
    body = json.dumps(EVENT).encode()
    response = httpx.post(
        server.url,
        content=iter([body[:10], body[10:]]),
        headers={"content-type": "application/json"},
        timeout=30,
    )

    assert response.status_code == 202
    assert len(route.messages()) == 1


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"Content-Length: abc\r\n", id="length-not-a-number"),
        pytest.param(b"Content-Length: -1\r\n", id="negative-length"),
        pytest.param(b"Content-Length: 5\r\nContent-Length: 6\r\n", id="two-lengths"),
        pytest.param(
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", id="length-and-chunked"
        ),
    ],
)
def test_contradictory_framing_is_a_4xx(server: FunctionProcess, route: Route, head: bytes) -> None:
    status, _answer = raw_post(server.port, head, b"{}\r\n", content_length=False)

    assert 400 <= status < 500
    assert route.count() == 0


@pytest.mark.parametrize(
    "content_type",
    [
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/json",
        "application/jsonp",
        "application/json-seq",
        "application/json; charset=utf-16",
        'application/json; charset="iso-8859-1"',
        "json",
        "*/*",
    ],
)
def test_a_content_type_other_than_json_in_utf8_is_a_415(
    server: FunctionProcess, route: Route, content_type: str
) -> None:
    assert_problem(post_event(server.url, headers={"content-type": content_type}), 415)
    assert route.count() == 0


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=UTF-8", "Application/JSON", "application/cloudevents+json"],
)
def test_json_content_types_are_accepted(
    server: FunctionProcess, route: Route, content_type: str
) -> None:
    assert post_event(server.url, headers={"content-type": content_type}).status_code == 202
    assert len(route.messages()) == 1


# --- strings that could reach AMQP headers ------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("a\x01b", id="control"),
        pytest.param("a\x7fb", id="delete"),
        pytest.param("a\tb", id="tab"),
        pytest.param("a b", id="space"),
        pytest.param("caf\xe9", id="latin-1"),
        pytest.param("x" * 201, id="too-long"),
        pytest.param("x" * 8000, id="very-long"),
        pytest.param("", id="empty"),
    ],
)
def test_an_idempotency_key_that_is_not_printable_ascii_is_a_400(
    server: FunctionProcess, route: Route, key: str
) -> None:
    key_line = b"Idempotency-Key: " + key.encode("latin-1") + b"\r\n"

    status, answer = raw_post(server.port, key_line, json.dumps(EVENT).encode())

    assert status == 400, answer[:300]
    # uvicorn's HTTP parser refuses control characters in a header before we see them.
    assert b"Idempotency-Key" in answer or b"Invalid HTTP request" in answer
    assert route.count() == 0


@pytest.mark.parametrize(
    "injection",
    [
        pytest.param(b"a\r\nX-Injected: 1", id="crlf"),
        pytest.param(b"a\nX-Injected: 1", id="lf"),
        pytest.param(b"a\rX-Injected: 1", id="cr"),
        pytest.param(b"a\x00b", id="nul"),
    ],
)
def test_header_injection_in_the_idempotency_key_publishes_nothing(
    server: FunctionProcess, route: Route, injection: bytes
) -> None:
    key_line = b"Idempotency-Key: " + injection + b"\r\n"

    status, _answer = raw_post(server.port, key_line, json.dumps(EVENT).encode())

    # The HTTP parser refuses a bare CR or NUL; a bare LF ends the header (obs-fold is
    # refused too) and the key "a" with a stray header may pass: then the id must be "a".
    messages = route.messages()
    if status == 202:
        assert [m.properties.message_id for m in messages] == ["a"]
        assert all(b"X-Injected" not in json.dumps(m.body).encode() for m in messages)
    else:
        assert 400 <= status < 500
        assert messages == []


@pytest.mark.parametrize(
    "msg_id",
    [
        pytest.param("msg\x01id", id="control"),
        pytest.param("msg id", id="space"),
        pytest.param("msg\x7f", id="delete"),
        pytest.param("m" * 256, id="too-long"),
        pytest.param("m" * 6000, id="very-long"),
        pytest.param("caf\xe9", id="latin-1"),
    ],
)
def test_a_webhook_id_that_is_not_printable_ascii_is_a_401_even_when_signed(
    signed_server: FunctionProcess, route: Route, msg_id: str
) -> None:
    """webhook-id becomes the AMQP message_id: it is refused before it gets there."""
    body = json.dumps(EVENT).encode()
    now = int(time.time())
    signature = Webhook(WHSEC).sign(msg_id, datetime.fromtimestamp(now, UTC), body.decode())
    signed_lines = (
        b"webhook-id: " + msg_id.encode("latin-1") + b"\r\n"
        b"webhook-timestamp: " + str(now).encode() + b"\r\n"
        b"webhook-signature: " + signature.encode() + b"\r\n"
    )

    status, answer = raw_post(signed_server.port, signed_lines, body)

    # Refused by us (401), or by uvicorn's HTTP parser for control characters (400).
    assert status == 401 or (status == 400 and b"Invalid HTTP request" in answer), answer[:300]
    assert route.count() == 0


def test_a_long_printable_webhook_id_is_the_message_id(
    signed_server: FunctionProcess, route: Route
) -> None:
    msg_id = "m" * 200
    body = json.dumps(EVENT)
    now = datetime.now(UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(WHSEC).sign(msg_id, now, body),
    }

    assert post_event(signed_server.url, body.encode(), headers=headers).status_code == 202
    assert [m.properties.message_id for m in route.messages()] == [msg_id]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("source", "zabbix\r\nX-Injected: 1"),
        ("source", "zabbix\x00"),
        ("source", "zab\u2028bix"),  # not a control character: accepted as text (see below)
        ("reason", "ransomware\x1b[31m"),
        ("summary", "line\rfeed"),
        ("hostname", "web-01\r\n.example.com"),
        ("hostname", "b\u00fccher.example.com"),
        ("hostname", "web-01.example.com\x00"),
    ],
)
def test_control_characters_in_fields_are_refused_by_the_schema(
    server: FunctionProcess, route: Route, field: str, value: str
) -> None:
    response = post_event(server.url, {**EVENT, field: value})

    if "\u2028" in value:  # a line separator is text, and text is all it becomes
        assert response.status_code == 202
        [message] = route.messages()
        assert message.body["data"]["source"] == value
        return
    assert_problem(response, 422, "validation-failed")
    assert f"/{field}" in [e["pointer"] for e in response.json()["errors"]]
    assert value not in response.text
    assert route.count() == 0


def test_a_lone_surrogate_escape_is_refused(server: FunctionProcess, route: Route) -> None:
    body = json.dumps(EVENT)[:-1].encode() + b', "details": {"a": "\\ud800"}}'

    response = post_event(server.url, body)

    assert 400 <= response.status_code < 500
    assert route.count() == 0


# --- unknown fields and routing -----------------------------------------------------


def test_every_unknown_field_is_named(server: FunctionProcess, route: Route) -> None:
    response = post_event(server.url, {**EVENT, "colour": "red", "Hostname": "x", "reason ": "y"})

    assert_problem(response, 422, "validation-failed")
    named = {e["pointer"] for e in response.json()["errors"] if e["type"] == "extra_forbidden"}
    assert named == {"/colour", "/Hostname", "/reason "}
    assert route.count() == 0


@pytest.fixture
def other_exchange(module_channel: BlockingChannel) -> Iterator[Route]:
    """An exchange a payload might name, with a queue that catches everything sent to it."""
    other = Route(module_channel, "#")
    yield other
    other.delete()


@pytest.mark.parametrize(
    "fields",
    [
        {"routing_key": "payments.refund"},
        {"exchange": "{other}"},
        {"routing_key": "#", "exchange": "{other}"},
        {"_routing_key": "x", "amqp": {"exchange": "{other}"}},
    ],
)
def test_routing_is_never_taken_from_the_payload(
    server: FunctionProcess, route: Route, other_exchange: Route, fields: dict[str, Any]
) -> None:
    payload = json.loads(json.dumps(fields).replace("{other}", other_exchange.exchange))

    response = post_event(server.url, {**EVENT, **payload})

    assert_problem(response, 422, "validation-failed")
    named = {e["pointer"] for e in response.json()["errors"]}
    assert {f"/{name}" for name in payload} <= named
    assert route.count() == 0
    assert other_exchange.count() == 0


def test_routing_is_never_taken_from_the_query_headers_or_details(
    server: FunctionProcess, route: Route, other_exchange: Route
) -> None:
    event = {**EVENT, "details": {"routing_key": "payments.refund", "exchange": "x"}}

    response = post_event(
        server.url,
        event,
        params={"routing_key": "payments.refund", "exchange": other_exchange.exchange},
        headers={"x-routing-key": "payments.refund", "x-exchange": other_exchange.exchange},
    )

    assert response.status_code == 202
    assert response.json()["routing_key"] == "vm.isolate"
    [message] = route.messages()
    assert message.routing_key == "vm.isolate"
    assert other_exchange.count() == 0


@pytest.mark.parametrize(
    "path",
    ["/vm_isolate", "/..%2f..%2fetc", "/%00", "/" + "a" * 5000, "//", "/?x=1/.."],
)
def test_other_paths_are_a_404_or_served_at_root_only(
    server: FunctionProcess, route: Route, path: str
) -> None:
    response = post_event(server.url.rstrip("/") + path)

    if path in ("/?x=1/..", "//"):
        # The query is not part of the path; a trailing slash is dropped (sender paths).
        assert response.status_code == 202
        route.messages()
        return
    assert_problem(response, 404, "not-found")
    assert route.count() == 0


# --- random input to every function -------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**45), max_value=10**45)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)


def sample_or_minimal_event(name: str) -> dict[str, Any]:
    """A function without a sample file yet still gets the minimal valid event."""
    if (EVENTS / f"{name}.json").exists():
        return sample_event(name)
    return {"hostname": "web-01.example.com", "source": "hypothesis"}


def event_like(name: str) -> st.SearchStrategy[Any]:
    """Mostly near-valid events (a sample with some fields replaced, dropped or added), so the
    random run reaches the schema and the broker, not just the parser."""
    sample = sample_or_minimal_event(name)
    keys = st.sampled_from([*sample, "severity", "summary", "details", "unknown"])
    return st.builds(
        lambda changes, dropped: {
            **{k: v for k, v in sample.items() if k not in dropped},
            **changes,
        },
        st.dictionaries(keys, JSON | st.sampled_from(["critical", "", "2026-01-01T00:00:00Z"])),
        st.sets(keys, max_size=2),
    )


class Tally:
    def __init__(self) -> None:
        self.statuses: list[int] = []

    def send(self, client: httpx.Client, url: str, body: bytes, content_type: str) -> None:
        response = client.post(url, content=body, headers={"content-type": content_type})
        assert response.status_code == 202 or 400 <= response.status_code < 500, (
            response.status_code,
            body[:300],
            response.text[:300],
        )
        self.statuses.append(response.status_code)


@pytest.fixture(scope="module", params=function_names())
def any_function(
    request: pytest.FixtureRequest,
    broker: BrokerNode,
    make_route: Callable[[str], Route],
    start_function: Callable[..., FunctionProcess],
) -> Iterator[tuple[str, FunctionProcess, Route]]:
    name: str = request.param
    catch_all = make_route("#")
    server = start_function(name, function_env(broker, catch_all.exchange))
    yield name, server, catch_all
    server.stop()


def test_random_json_gets_202_or_4xx_and_one_message_per_202(
    any_function: tuple[str, FunctionProcess, Route],
) -> None:
    name, server, catch_all = any_function
    catch_all.messages()
    tally = Tally()

    with httpx.Client(timeout=30) as client:

        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(document=JSON | event_like(name))
        def send_json(document: Any) -> None:
            tally.send(client, server.url, json.dumps(document).encode(), "application/json")

        @settings(max_examples=100, deadline=None, derandomize=True)
        @given(
            body=st.binary(max_size=300) | st.text(max_size=200).map(str.encode),
            content_type=st.sampled_from(["application/json", "text/plain", "", "x/y; a=b"]),
        )
        def send_bytes(body: bytes, content_type: str) -> None:
            tally.send(client, server.url, body, content_type)

        send_json()
        send_bytes()

    accepted = tally.statuses.count(202)
    assert accepted > 0, f"{name}: no random event was accepted; the test reaches no publish"
    assert catch_all.count() == accepted
    assert len({s for s in tally.statuses if s != 202}) > 1  # several kinds of refusal


SENDER_PATHS = ["alertmanager", "grafana", "datadog", "cloud-monitoring", "splunk"]


def sender_sample(sender: str) -> Any:
    path = EVENTS / "senders" / f"{sender.replace('-', '_')}.json"
    candidates = [path, *sorted((EVENTS / "senders").glob(f"{sender.replace('-', '_')}*.json"))]
    for candidate in candidates:
        if candidate.exists():
            return json.loads(candidate.read_text())
    return {}


def test_random_json_on_sender_paths_gets_202_or_4xx_and_one_message_per_id(
    any_function: tuple[str, FunctionProcess, Route],
) -> None:
    """Sender paths (served by default) may relay a batch: the 202 lists one id per message."""
    name, server, catch_all = any_function
    catch_all.messages()
    published_ids: list[str] = []
    statuses: list[int] = []

    def mutated(sample: Any) -> st.SearchStrategy[Any]:
        if not isinstance(sample, dict) or not sample:
            return JSON
        keys = st.sampled_from([*sample, "unknown"])
        return st.builds(
            lambda changes: {**sample, **changes}, st.dictionaries(keys, JSON, max_size=2)
        )

    with httpx.Client(timeout=30) as client:

        @settings(
            max_examples=100,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(data=st.data(), sender=st.sampled_from(SENDER_PATHS))
        def send(data: st.DataObject, sender: str) -> None:
            document = data.draw(
                JSON | mutated(sender_sample(sender)) | st.just(sender_sample(sender))
            )
            response = client.post(
                f"{server.url}{sender}",
                content=json.dumps(document).encode(),
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 202 or 400 <= response.status_code < 500, (
                sender,
                response.status_code,
                response.text[:300],
            )
            statuses.append(response.status_code)
            if response.status_code == 202:
                published_ids.extend(response.json()["ids"])

        send()

    if name == "vm_isolate":  # the sender samples map to vm_isolate without SENDER_MAPPINGS
        assert 202 in statuses
    assert catch_all.count() == len(published_ids)
