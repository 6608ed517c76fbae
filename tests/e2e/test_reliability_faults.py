"""Delivery guarantees under broker faults, against real RabbitMQ nodes of this module's own.

The node here is stopped, restarted, alarmed and cut off, so the session broker stays healthy
for the other tests. Its exchange and queue are durable and the messages persistent, so what
was confirmed survives a restart. Every test checks the promise the same way: each 202 is on
the queue exactly once, every other answer is a 503 with Retry-After, and nothing waits past
the publish timeout.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from deploy.broker import BrokerNode, start_broker
from deploy.function_process import FunctionProcess
from shared.publisher import BACKOFF_MAX_SECONDS
from tests.e2e.conftest import function_env
from tests.e2e.faults import (
    FAULT_ENV,
    PUBLISH_TIMEOUT,
    ROUTING_KEY,
    DurableRoute,
    Load,
    Outcome,
    assert_the_promise_holds,
    log_records,
    post,
    wait_for_202,
)
from tests.tcp_proxy import TcpProxy


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerNode]:
    """A node of this module's own, which the tests may stop, restart and alarm."""
    node = start_broker(tmp_path_factory.mktemp("faults"), purpose="faults")
    try:
        yield node
    finally:
        node.stop()
    assert not node.leftover_pids()


@pytest.fixture
def route(faults: BrokerNode) -> Iterator[DurableRoute]:
    made = DurableRoute(faults)
    yield made
    made.delete()


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
    with Load(server.url, clients=12) as load:
        time.sleep(2)
        stopping_at = time.monotonic()
        faults.stop_node()  # a clean stop closes our connection with CONNECTION_FORCED
        time.sleep(2)
        faults.start_node()
        restarted_at = time.monotonic()
        load.wait_for_202_after(restarted_at, within=BACKOFF_MAX_SECONDS + 3)
        time.sleep(1)  # some load on the recovered link
    outcomes = load.outcomes

    before = [o for o in outcomes if o.ended < stopping_at]  # done before it
    assert before
    assert all(o.status == 202 for o in before)
    assert any(o.status == 503 for o in outcomes), "the restart went unnoticed"
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
