"""Delivery guarantees under broker faults, against real RabbitMQ nodes of this module's own.

The node here is stopped, restarted, alarmed and cut off, so the session broker stays healthy
for the other tests. Its exchange and queue are durable and the messages persistent, so what
was confirmed survives a restart. Every test checks the promise the same way: each 202 is on
the queue exactly once, every other answer is a 503 with Retry-After, and nothing waits past
the publish timeout.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from deploy.broker import BrokerNode, start_broker
from deploy.function_process import FunctionProcess
from shared.publisher import BACKOFF_MAX_SECONDS
from tests.conftest import broker_connection_params
from tests.e2e.conftest import EVENT, free_port, function_env
from tests.tcp_proxy import TcpProxy

ROUTING_KEY = "vm.isolate"
PUBLISH_TIMEOUT = 3.0  # AMQP_PUBLISH_TIMEOUT of the functions in this module
MARGIN = 1.5  # HTTP, scheduling and a loaded 2-core machine on top of the timeout
FAULT_ENV = {"AMQP_PUBLISH_TIMEOUT": f"{PUBLISH_TIMEOUT:g}", "AMQP_CONNECT_TIMEOUT": "1"}


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerNode]:
    """A node of this module's own, which the tests may stop, restart and alarm."""
    node = start_broker(tmp_path_factory.mktemp("faults"), purpose="faults")
    try:
        yield node
    finally:
        node.stop()
    assert not node.leftover_pids()


@contextlib.contextmanager
def channel_on(node: BrokerNode) -> Iterator[BlockingChannel]:
    """A channel on a fresh connection: connections do not survive a restart."""
    connection = pika.BlockingConnection(broker_connection_params(node))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


class DurableRoute:
    """A durable topic exchange with a durable queue bound to ROUTING_KEY on `node`."""

    def __init__(
        self,
        node: BrokerNode,
        *,
        exchange: str | None = None,
        binding: str = ROUTING_KEY,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self.node = node
        self.exchange = exchange or f"faults-{uuid.uuid4().hex[:12]}"
        self.queue = f"{self.exchange}.q"
        with channel_on(node) as channel:
            channel.exchange_declare(self.exchange, "topic", durable=True)
            channel.queue_declare(self.queue, durable=True, arguments=arguments)
            channel.queue_bind(self.queue, self.exchange, binding)

    def message_ids(self) -> list[str]:
        """Take every message off the queue; their message_ids, duplicates kept."""
        ids: list[str] = []
        with channel_on(self.node) as channel:
            while True:
                method, properties, _body = channel.basic_get(self.queue, auto_ack=True)
                if method is None:
                    return ids
                assert properties.delivery_mode == 2  # persistent: survives a restart
                ids.append(properties.message_id)

    def delete(self) -> None:
        with channel_on(self.node) as channel:
            channel.queue_delete(self.queue)
            channel.exchange_delete(self.exchange)


@pytest.fixture
def route(faults: BrokerNode) -> Iterator[DurableRoute]:
    made = DurableRoute(faults)
    yield made
    made.delete()


@pytest.fixture
def run_function(tmp_path: Path) -> Iterator[Callable[..., FunctionProcess]]:
    """Start vm_isolate with the given environment; stopped (SIGTERM) after the test."""
    started: list[FunctionProcess] = []

    def run(env: dict[str, str]) -> FunctionProcess:
        log = tmp_path / f"function-{len(started)}.log"
        started.append(FunctionProcess("vm_isolate", free_port(), env, log_path=log))
        return started[-1].start()

    yield run
    for server in started:
        server.stop()


def log_records(tmp_path: Path, logger: str | None = None) -> list[dict[str, Any]]:
    records = []
    for log in sorted(tmp_path.glob("function-*.log")):
        for line in log.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if logger is None or record.get("logger") == logger:
                    records.append(record)
    return records


@dataclass
class Outcome:
    key: str
    status: int  # 0: no answer at all
    retry_after: str | None
    problem: str | None
    started: float
    seconds: float


def post(client: httpx.Client | None, url: str) -> Outcome:
    """POST the event with an Idempotency-Key of its own, so even a 503's id is known."""
    key = uuid.uuid4().hex
    started = time.monotonic()
    try:
        response = (client or httpx).post(
            url, json=EVENT, headers={"idempotency-key": key}, timeout=PUBLISH_TIMEOUT + 30
        )
    except httpx.HTTPError:
        return Outcome(key, 0, None, None, started, time.monotonic() - started)
    problem = response.json().get("type") if response.status_code != 202 else None
    return Outcome(
        key,
        response.status_code,
        response.headers.get("retry-after"),
        problem,
        started,
        time.monotonic() - started,
    )


def assert_the_promise_holds(outcomes: list[Outcome], queued: list[str]) -> None:
    """Each 202 is on the queue once; the rest are timely 503s; nothing unknown was queued."""
    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) <= {202, 503}, statuses
    slowest = max(outcomes, key=lambda o: o.seconds)
    assert slowest.seconds < PUBLISH_TIMEOUT + MARGIN, slowest
    for refused in (o for o in outcomes if o.status == 503):
        assert refused.retry_after is not None, refused
        assert int(refused.retry_after) >= 1, refused
    copies = Counter(queued)
    accepted = [o.key for o in outcomes if o.status == 202]
    lost = [key for key in accepted if copies[key] != 1]
    assert not lost, f"{len(lost)} accepted events not on the queue exactly once"
    # At least once: a 503 may still have been enqueued (e.g. its confirm was lost).
    assert set(copies) <= {o.key for o in outcomes}


# --- 3. a broker that refuses ------------------------------------------------------------


def test_a_full_queue_nacks_and_the_log_says_so(
    faults: BrokerNode, run_function: Callable[..., FunctionProcess], tmp_path: Path
) -> None:
    full = DurableRoute(faults, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    try:
        server = run_function(function_env(faults, full.exchange, **FAULT_ENV))
        outcomes = [post(None, server.url) for _ in range(3)]

        assert [o.status for o in outcomes] == [202, 503, 503]
        assert {o.problem for o in outcomes[1:]} == {"urn:event-relay:problem:publish-rejected"}
        assert_the_promise_holds(outcomes, full.message_ids())
    finally:
        full.delete()
    refused = [r for r in log_records(tmp_path, "event_relay.request") if r["status"] == 503]
    assert len(refused) == 2
    assert all("nack" in r["reason"] and "queue may be full" in r["reason"] for r in refused)


def test_a_missing_exchange_gets_503_and_the_log_names_it(
    faults: BrokerNode, run_function: Callable[..., FunctionProcess], tmp_path: Path
) -> None:
    server = run_function(function_env(faults, "no-such-exchange", **FAULT_ENV))

    outcomes = [post(None, server.url) for _ in range(3)]

    assert_the_promise_holds(outcomes, [])
    assert {o.status for o in outcomes} == {503}
    reasons = [r["reason"] for r in log_records(tmp_path, "event_relay.request")]
    # The first hits the 404 itself; the next ones are answered from the back-off, which
    # still names the cause rather than a vague "unreachable".
    assert len(reasons) == 3
    assert all("no exchange 'no-such-exchange'" in reason for reason in reasons), reasons


def test_an_unroutable_event_gets_503_and_the_log_names_the_routing_key(
    faults: BrokerNode, run_function: Callable[..., FunctionProcess], tmp_path: Path
) -> None:
    elsewhere = DurableRoute(faults, binding="vm.other")
    try:
        server = run_function(function_env(faults, elsewhere.exchange, **FAULT_ENV))
        outcomes = [post(None, server.url) for _ in range(2)]
        assert_the_promise_holds(outcomes, elsewhere.message_ids())
    finally:
        elsewhere.delete()
    assert [o.problem for o in outcomes] == ["urn:event-relay:problem:unroutable"] * 2
    returned = log_records(tmp_path, "event_relay.publisher")
    assert [r["routing_key"] for r in returned if "unroutable" in r["message"]] == [ROUTING_KEY] * 2
    requests = log_records(tmp_path, "event_relay.request")
    assert all(f"routing key '{ROUTING_KEY}'" in r["reason"] for r in requests)


def function_connections(node: BrokerNode) -> list[str]:
    """The names ("client:port -> server:port") of the node's running client connections."""
    rows = [
        row.split("\t")
        for row in node.ctl("list_connections", "name", "state", "--silent").splitlines()
    ]
    # A connection closed a moment ago is still listed for a while, in the state "closed".
    return sorted(row[0] for row in rows if len(row) == 2 and row[1] == "running")


def wait_for_memory_alarm(node: BrokerNode, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while "memory" not in node.ctl("eval", "rabbit_alarm:get_alarms()."):
        assert time.monotonic() < deadline, "the broker raised no memory alarm"
        time.sleep(0.1)


def test_a_memory_alarm_gets_a_quick_503_and_the_same_connection_serves_once_it_clears(
    faults: BrokerNode,
    route: DurableRoute,
    run_function: Callable[..., FunctionProcess],
    tmp_path: Path,
) -> None:
    server = run_function(function_env(faults, route.exchange, **FAULT_ENV))
    outcomes = [post(None, server.url)]
    connections = function_connections(faults)
    assert len(connections) == 1

    faults.ctl("set_vm_memory_high_watermark", "0.000001")
    try:
        wait_for_memory_alarm(faults)  # the alarm is raised asynchronously
        # RabbitMQ sends connection.blocked only once a publish arrives during the alarm;
        # that publish is answered then, not at the timeout, and the next ones at once.
        alarmed = [post(None, server.url) for _ in range(3)]
    finally:
        faults.ctl("set_vm_memory_high_watermark", "0.4")
    assert [o.problem for o in alarmed] == ["urn:event-relay:problem:broker-blocked"] * 3
    # Well before the publish timeout: the held one when the broker says it blocks, then at once.
    assert all(o.seconds < PUBLISH_TIMEOUT - 1 for o in alarmed), alarmed

    recovered = wait_for_202(server.url, within=5)
    outcomes += alarmed + recovered
    assert function_connections(faults) == connections  # not torn down for an alarm
    queued = route.message_ids()
    assert_the_promise_holds(outcomes, queued)
    # The held publish is delivered once the alarm clears: a 503 is no proof of absence.
    assert alarmed[0].key in queued
    reasons = [r.get("reason", "") for r in log_records(tmp_path, "event_relay.request")]
    assert sum("memory or disk alarm" in reason for reason in reasons) == 3


def wait_for_202(url: str, *, within: float) -> list[Outcome]:
    """POST every 0.2 s until a 202; every outcome, the 202 last."""
    outcomes = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        outcomes.append(post(None, url))
        if outcomes[-1].status == 202:
            return outcomes
        time.sleep(0.2)
    raise AssertionError(f"no 202 within {within} s: {Counter(o.status for o in outcomes)}")


# --- 2. a connection dropped silently ------------------------------------------------------


@pytest.mark.parametrize("fault", ["cut", "black-hole"])
def test_a_dropped_connection_is_detected_within_the_timeout_then_replaced(
    faults: BrokerNode,
    route: DurableRoute,
    run_function: Callable[..., FunctionProcess],
    fault: str,
) -> None:
    with TcpProxy(faults.port) as proxy:
        env = function_env(faults, route.exchange, AMQP_URL=faults.url(port=proxy.port))
        server = run_function({**env, **FAULT_ENV})
        outcomes = [post(None, server.url)]
        assert outcomes[0].status == 202

        if fault == "cut":  # a NAT or firewall resetting the flow
            proxy.cut()
            outcomes += [post(None, server.url) for _ in range(3)]
        else:  # a peer that silently stops answering: the publish hangs until the timeout
            proxy.black_hole()
            during = [post(None, server.url) for _ in range(2)]
            proxy.resume()
            assert [o.status for o in during] == [503, 503]
            outcomes += during
        outcomes += wait_for_202(server.url, within=BACKOFF_MAX_SECONDS + 2)

    assert_the_promise_holds(outcomes, route.message_ids())


# --- 1. a broker restart under load --------------------------------------------------------


def test_a_broker_restart_under_load_loses_no_accepted_event(
    faults: BrokerNode,
    route: DurableRoute,
    run_function: Callable[..., FunctionProcess],
) -> None:
    server = run_function(function_env(faults, route.exchange, **FAULT_ENV))
    outcomes: list[Outcome] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client() as http:
            # Bounded: at most ~20 requests/s per client and 600 in all per client.
            for _ in range(600):
                if stop.is_set():
                    return
                outcomes.append(post(http, server.url))
                time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(12)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        stopping_at = time.monotonic()
        faults.stop_node()  # a clean stop closes our connection with CONNECTION_FORCED
        time.sleep(2)
        faults.start_node()
        restarted_at = time.monotonic()
        deadline = restarted_at + BACKOFF_MAX_SECONDS + 3
        while time.monotonic() < deadline and not any(
            o.status == 202 and o.started > restarted_at for o in list(outcomes)
        ):
            time.sleep(0.2)
        time.sleep(1)  # some load on the recovered link
    finally:
        stop.set()
        for thread in threads:
            thread.join(PUBLISH_TIMEOUT + 35)

    before = [o for o in outcomes if o.started + o.seconds < stopping_at]  # done before it
    after = [o for o in outcomes if o.started > restarted_at]
    assert before
    assert all(o.status == 202 for o in before)
    assert any(o.status == 503 for o in outcomes), "the restart went unnoticed"
    assert any(o.status == 202 for o in after), "no recovery without a restart"
    assert_the_promise_holds(outcomes, route.message_ids())


# --- 4. failover between hosts -------------------------------------------------------------


@pytest.fixture
def second_node(faults: BrokerNode, tmp_path: Path) -> Iterator[BrokerNode]:
    """Another node with the faults node's certificates: one CA setting trusts both."""
    node = BrokerNode(tmp_path / "second", purpose="second")
    for name in ("ca_cert", "server_cert", "server_key", "client_cert", "client_key"):
        shutil.copyfile(getattr(faults.tls, name), getattr(node.tls, name))
    try:
        node.start()
        yield node
    finally:
        node.stop()


def test_with_the_first_broker_stopped_requests_go_to_the_next(
    faults: BrokerNode,
    second_node: BrokerNode,
    run_function: Callable[..., FunctionProcess],
) -> None:
    on_faults = DurableRoute(faults)
    on_second = DurableRoute(second_node, exchange=on_faults.exchange)
    try:
        urls = f"{second_node.url()},{faults.url()}"
        server = run_function(function_env(faults, on_faults.exchange, AMQP_URL=urls, **FAULT_ENV))
        first = post(None, server.url)
        assert first.status == 202
        assert on_second.message_ids() == [first.key]  # the first broker named serves

        second_node.stop_node()
        then = [post(None, server.url) for _ in range(3)]

        assert [o.status for o in then] == [202] * 3
        assert on_faults.message_ids() == [o.key for o in then]
    finally:
        on_faults.delete()


def test_a_hung_first_broker_costs_one_connect_timeout(
    faults: BrokerNode, route: DurableRoute, run_function: Callable[..., FunctionProcess]
) -> None:
    with TcpProxy(faults.port) as hung:
        hung.black_hole()  # accepts TCP, never completes the TLS handshake
        urls = f"{faults.url(port=hung.port)},{faults.url()}"
        server = run_function(function_env(faults, route.exchange, AMQP_URL=urls, **FAULT_ENV))
        outcomes = [post(None, server.url) for _ in range(3)]

    assert [o.status for o in outcomes] == [202] * 3
    assert_the_promise_holds(outcomes, route.message_ids())


# --- 7. graceful shutdown ------------------------------------------------------------------


@pytest.mark.parametrize("in_flight", [0, 6])
def test_sigterm_answers_the_requests_in_flight_then_closes_the_connection_cleanly(
    faults: BrokerNode,
    route: DurableRoute,
    run_function: Callable[..., FunctionProcess],
    in_flight: int,
) -> None:
    with TcpProxy(faults.port) as proxy:
        env = function_env(faults, route.exchange, AMQP_URL=faults.url(port=proxy.port))
        server = run_function({**env, "AMQP_PUBLISH_TIMEOUT": "10"})
        outcomes = [post(None, server.url)]
        [connection] = function_connections(faults)  # the proxy's side of it, as the broker sees

        if in_flight:  # hold the confirms back, so these requests are in flight at SIGTERM
            proxy.black_hole()
        with httpx.Client() as http:
            results: list[Outcome] = []
            senders = [
                threading.Thread(target=lambda: results.append(post(http, server.url)))
                for _ in range(in_flight)
            ]
            for sender in senders:
                sender.start()
            time.sleep(1.0)  # ample time for every request to reach the function, even on a busy CI
            assert server.process is not None
            server.process.terminate()  # SIGTERM, as Cloud Run sends it
            time.sleep(0.5)
            proxy.resume()
            for sender in senders:
                sender.join(15)
            exit_code = server.process.wait(15)
        outcomes += results

    assert exit_code == 0
    assert [o.status for o in outcomes] == [202] * (1 + in_flight)
    assert all(o.seconds > 0.9 for o in results), "these requests were not in flight at SIGTERM"
    assert sorted(o.key for o in outcomes) == sorted(route.message_ids())
    peer = connection.split(" -> ")[0]
    deadline = time.monotonic() + 5
    while "closing AMQP connection" not in (lines := connection_log(faults, peer)):
        assert time.monotonic() < deadline, f"the broker saw no close: {lines}"
        time.sleep(0.2)
    # An abrupt end reads "client unexpectedly closed TCP connection" on the next line.
    assert "unexpectedly" not in lines
    assert "[warning]" not in lines


def connection_log(node: BrokerNode, peer: str) -> str:
    """The broker's log lines about the connection from `peer`: those of its Erlang process."""
    log = "".join(p.read_text(errors="replace") for p in (node.base_dir / "log").glob("*.log"))
    found = re.search(rf"accepting AMQP connection (<[\d.]+>) \({re.escape(peer)} ->", log)
    assert found, f"the broker never saw a connection from {peer}"
    return "\n".join(line for line in log.splitlines() if found[1] in line)
