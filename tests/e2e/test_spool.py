"""The spool, end to end: a real broker node of this module's own (stopped and started here),
Google's Pub/Sub emulator, the event function and the drain under functions-framework.

While the broker cannot confirm, a 202 means Pub/Sub acknowledged the message; the drain puts it
on the broker once it is back, exactly as a direct publish would have.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.broker import BrokerNode, free_port, start_broker
from deploy.function_process import FunctionProcess
from deploy.pubsub_emulator import PubSubEmulator
from shared.vocabulary import DRAIN
from tests.e2e.conftest import EVENT, function_env
from tests.e2e.faults import DurableRoute, Load, channel_on

PUBLISH_TIMEOUT, REQUEST_TIMEOUT = 3.0, 6.0
MARGIN = 1.5  # HTTP, scheduling and a loaded 2-core machine on top of the budget
TIMINGS = {
    "AMQP_PUBLISH_TIMEOUT": f"{PUBLISH_TIMEOUT:g}",
    "AMQP_CONNECT_TIMEOUT": "1",
    "REQUEST_TIMEOUT": f"{REQUEST_TIMEOUT:g}",
}
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerNode]:
    started = start_broker(tmp_path_factory.mktemp("spool-broker"), purpose="spool")
    try:
        yield started
    finally:
        started.stop()
    assert not started.leftover_pids()


@pytest.fixture
def broker_up(node: BrokerNode) -> Iterator[BrokerNode]:
    """The node, running; running again after the test whatever the test did to it."""
    node.start_node()
    yield node
    node.start_node()


@pytest.fixture
def route(broker_up: BrokerNode) -> Iterator[DurableRoute]:
    made = DurableRoute(broker_up)
    yield made
    broker_up.start_node()
    made.delete()


@pytest.fixture
def topic(pubsub: PubSubEmulator) -> str:
    """A topic of the test's own, with a pull subscription `<topic>-probe` that sees it all."""
    name = f"spool-{uuid.uuid4().hex[:10]}"
    pubsub.create_topic(name)
    pubsub.create_subscription(f"{name}-probe", name)
    return name


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[str, dict[str, str]], FunctionProcess]]:
    started: list[FunctionProcess] = []

    def run(target: str, env: dict[str, str]) -> FunctionProcess:
        log = tmp_path / f"{target}-{len(started)}.log"
        started.append(FunctionProcess(target, free_port(), env, log_path=log))
        return started[-1].start()

    yield run
    for server in started:
        server.stop()


def spool_env(
    node: BrokerNode, route: DurableRoute, pubsub: PubSubEmulator, topic: str
) -> dict[str, str]:
    return function_env(
        node,
        route.exchange,
        **TIMINGS,
        SPOOL_TOPIC=pubsub.topic_path(topic),
        PUBSUB_EMULATOR_HOST=pubsub.host,
    )


def post(url: str, key: str | None = None, client: Any = httpx) -> httpx.Response:
    headers = {"idempotency-key": key or uuid.uuid4().hex}
    response: httpx.Response = client.post(
        url, json=EVENT, headers=headers, timeout=REQUEST_TIMEOUT + 30
    )
    return response


def as_eventarc(message: dict[str, Any], topic: str) -> tuple[dict[str, str], bytes]:
    """The CloudEvent (binary mode) Eventarc delivers for a Pub/Sub message."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": message["messageId"],
        "ce-type": PUBSUB_PUBLISHED,
        "ce-source": f"//pubsub.googleapis.com/{topic}",
        "content-type": "application/json",
    }
    wire = {**message, "data": base64.b64encode(message["data"]).decode()}
    return headers, json.dumps({"message": wire, "subscription": "eventarc-sub"}).encode()


def taken(route: DurableRoute) -> list[tuple[Any, bytes]]:
    """Take every message off the route's queue: (properties, body)."""
    found: list[tuple[Any, bytes]] = []
    with channel_on(route.node) as channel:
        while True:
            method, properties, body = channel.basic_get(route.queue, auto_ack=True)
            if method is None:
                return found
            found.append((properties, body))


def test_a_spooled_message_reaches_the_queue_as_a_direct_publish_would_have(
    broker_up: BrokerNode,
    route: DurableRoute,
    pubsub: PubSubEmulator,
    topic: str,
    serve: Callable[[str, dict[str, str]], FunctionProcess],
) -> None:
    env = spool_env(broker_up, route, pubsub, topic)
    relay, drain = serve("vm_isolate", env), serve(DRAIN, env)
    direct = post(relay.url)
    assert direct.json()["delivery"] == "confirmed"
    [(direct_props, direct_body)] = taken(route)
    assert pubsub.pull(f"{topic}-probe", wait=0.5) == []  # a confirmed one is never spooled

    broker_up.stop_node()
    key = uuid.uuid4().hex
    answer = post(relay.url, key)

    assert answer.status_code == 202, answer.text
    assert answer.json() == {"id": key, "routing_key": "vm.isolate", "delivery": "spooled"}
    [spooled] = pubsub.pull(f"{topic}-probe")
    attributes = spooled["attributes"]
    assert attributes["message_id"] == key
    assert attributes["routing_key"] == "vm.isolate"
    assert attributes["exchange"] == route.exchange
    assert attributes["type"] == "event-relay.vm_isolate"
    envelope = json.loads(spooled["data"])
    assert envelope["id"] == key
    assert envelope["data"]["hostname"] == EVENT["hostname"].lower()

    headers, push = as_eventarc(spooled, pubsub.topic_path(topic))
    refused = httpx.post(drain.url, content=push, headers=headers, timeout=30)
    assert refused.status_code == 503  # the broker is still down: Pub/Sub delivers it again
    assert int(refused.headers["retry-after"]) >= 1

    broker_up.start_node()
    drained = httpx.post(drain.url, content=push, headers=headers, timeout=30)

    assert drained.status_code == 200, drained.text
    assert drained.json() == {"id": key, "delivery": "confirmed"}
    [(props, body)] = taken(route)
    assert body == spooled["data"]  # byte for byte what the function would have published
    assert props.message_id == key
    compared = ("type", "content_type", "content_encoding", "delivery_mode", "app_id", "headers")
    assert {p: getattr(props, p) for p in compared} == {
        p: getattr(direct_props, p) for p in compared
    }
    assert props.timestamp == int(attributes["timestamp"])  # when the function received it
    direct_envelope = json.loads(direct_body)
    assert set(envelope) == set(direct_envelope)
    assert {k: v for k, v in envelope["data"].items() if k != "detected_at"} == {
        k: v for k, v in direct_envelope["data"].items() if k != "detected_at"
    }


def test_under_load_a_broker_outage_gets_only_202s_and_every_one_arrives(
    broker_up: BrokerNode,
    route: DurableRoute,
    pubsub: PubSubEmulator,
    topic: str,
    serve: Callable[[str, dict[str, str]], FunctionProcess],
) -> None:
    env = spool_env(broker_up, route, pubsub, topic)
    relay, drain = serve("vm_isolate", env), serve(DRAIN, env)
    pubsub.create_subscription(f"{topic}-drain", topic, push_endpoint=drain.url)

    with Load(relay.url, clients=8) as load:
        time.sleep(6)
        broker_up.stop_node()
        time.sleep(8)
        broker_up.start_node()
        time.sleep(6)

    outcomes = load.outcomes
    statuses = Counter(o.status for o in outcomes)
    deliveries = Counter(o.delivery for o in outcomes)
    slowest = max(o.seconds for o in outcomes)
    print(f"answers: {dict(statuses)}, {dict(deliveries)}; slowest {slowest:.2f} s")
    assert set(statuses) == {202}, statuses  # Pub/Sub was up all along: never a 503
    assert deliveries["confirmed"], deliveries
    assert deliveries["spooled"], deliveries
    assert slowest < REQUEST_TIMEOUT + MARGIN
    accepted = {o.key for o in outcomes}
    arrived: Counter[str] = Counter()
    deadline = time.monotonic() + 120  # the emulator pushes again after each 503, with back-off
    while time.monotonic() < deadline and not accepted <= set(arrived):
        arrived.update(route.message_ids())
        time.sleep(1)
    missing = accepted - set(arrived)
    assert not missing, f"{len(missing)} of {len(accepted)} accepted events never arrived"
    assert set(arrived) <= accepted  # duplicates are allowed, strangers are not


def test_with_the_spool_down_too_the_caller_gets_503_and_no_202_is_lost(
    broker_up: BrokerNode,
    route: DurableRoute,
    serve: Callable[[str, dict[str, str]], FunctionProcess],
) -> None:
    # No emulator listens on this port: the spool is down as well.
    down = f"127.0.0.1:{free_port()}"
    env = function_env(
        broker_up,
        route.exchange,
        **TIMINGS,
        SPOOL_TOPIC="projects/event-relay-local/topics/spool-down",
        PUBSUB_EMULATOR_HOST=down,
    )
    relay = serve("vm_isolate", env)
    confirmed = [post(relay.url) for _ in range(3)]

    broker_up.stop_node()
    started = time.monotonic()
    refused = post(relay.url)
    seconds = time.monotonic() - started
    broker_up.start_node()

    assert [r.json()["delivery"] for r in confirmed] == ["confirmed"] * 3
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["content-type"] == "application/problem+json"
    assert seconds < REQUEST_TIMEOUT + MARGIN
    assert sorted(route.message_ids()) == sorted(r.json()["id"] for r in confirmed)


def drain_records(log: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line[:1] == "{"]
    return [line for line in lines if line.get("logger") == "event_relay.drain"]


SPOOLED = json.dumps({"id": "evt-1", "type": "event-relay.vm_isolate", "data": {}}).encode()


def attributes_of(body: bytes, **changes: str | None) -> dict[str, str]:
    good = {
        "exchange": "EXCHANGE",
        "routing_key": "vm.isolate",
        "message_id": "evt-1",
        "type": "event-relay.vm_isolate",
        "timestamp": "1764000000",
        "content_type": "application/cloudevents+json",
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    merged = {**good, **changes}
    return {k: v for k, v in merged.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "body", "reason"),
    [
        pytest.param(
            {"routing_key": None}, SPOOLED, "attributes missing: routing_key", id="no-key"
        ),
        pytest.param({}, SPOOLED.replace(b"evt-1", b"evt-2"), "body_sha256", id="tampered-body"),
        pytest.param(
            {"routing_key": "service.down"},
            SPOOLED,
            "is not event-relay.vm_isolate's",
            id="rekeyed",
        ),
        pytest.param({"type": "x.vm_isolate"}, SPOOLED, "is not ours", id="foreign-type"),
    ],
)
def test_the_drain_refuses_a_message_that_is_not_as_spooled_and_never_publishes_it(
    broker_up: BrokerNode,
    route: DurableRoute,
    pubsub: PubSubEmulator,
    topic: str,
    serve: Callable[[str, dict[str, str]], FunctionProcess],
    tmp_path: Path,
    changes: dict[str, str | None],
    body: bytes,
    reason: str,
) -> None:
    drain = serve(DRAIN, spool_env(broker_up, route, pubsub, topic))
    pubsub.create_subscription(f"{topic}-drain", topic, push_endpoint=drain.url)
    attributes = attributes_of(SPOOLED, **{"exchange": route.exchange, **changes})

    pubsub.publish(topic, body, attributes)  # as a stranger with access to the topic would

    deadline = time.monotonic() + 30
    while not drain_records(tmp_path / f"{DRAIN}-0.log") and time.monotonic() < deadline:
        time.sleep(0.2)
    [record] = drain_records(tmp_path / f"{DRAIN}-0.log")  # answered 200: never pushed again
    assert record["severity"] == "ERROR"
    assert record["message"] == "spooled message not relayed"
    assert record["problem"] == "spooled-message"
    assert reason in record["reason"]
    assert record["status"] == 200
    time.sleep(1)
    assert route.message_ids() == []


def test_a_message_of_an_unknown_event_type_is_kept_for_a_newer_drain(
    broker_up: BrokerNode,
    route: DurableRoute,
    pubsub: PubSubEmulator,
    topic: str,
    serve: Callable[[str, dict[str, str]], FunctionProcess],
) -> None:
    drain = serve(DRAIN, spool_env(broker_up, route, pubsub, topic))
    body = SPOOLED.replace(b"vm_isolate", b"vm_quarantine")
    attributes = attributes_of(body, exchange=route.exchange, type="event-relay.vm_quarantine")
    message = {"data": body, "attributes": attributes, "messageId": "1"}
    headers, push = as_eventarc(message, pubsub.topic_path(topic))

    answer = httpx.post(drain.url, content=push, headers=headers, timeout=30)

    assert answer.status_code == 503  # Pub/Sub keeps it: redeploy the drain to relay it
    assert route.message_ids() == []


def test_random_bodies_to_the_drain_get_no_5xx_and_publish_nothing(
    broker_up: BrokerNode,
    route: DurableRoute,
    pubsub: PubSubEmulator,
    topic: str,
    serve: Callable[[str, dict[str, str]], FunctionProcess],
) -> None:
    drain = serve(DRAIN, spool_env(broker_up, route, pubsub, topic))
    statuses: Counter[int] = Counter()
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
        max_leaves=20,
    )
    pushes = st.fixed_dictionaries(
        {
            "message": st.fixed_dictionaries(
                {}, optional={"data": st.text(), "attributes": json_values}
            )
        }
    )

    with httpx.Client(timeout=30) as client:

        @settings(max_examples=150, deadline=None, derandomize=True)
        @given(body=pushes.map(json.dumps).map(str.encode) | st.binary(max_size=300))
        def send(body: bytes) -> None:
            statuses[client.post(drain.url, content=body).status_code] += 1

        send()

    assert set(statuses) <= {200, 400, 413, 503}, statuses  # refused, malformed, or kept
    assert statuses[400], statuses
    assert statuses[200], statuses
    assert route.message_ids() == []
