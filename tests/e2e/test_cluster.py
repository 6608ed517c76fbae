"""The on-prem side as it runs: a three-node RabbitMQ cluster with quorum queues, nodes lost
under load.

One cluster for the module: three nodes joined with `rabbitmqctl join_cluster`, mutual TLS on
each (one CA, a server certificate per node), quorum queues replicated on all three. The
function lists the three nodes in AMQP_URL. Each test starts with every node running and every
quorum queue fully replicated, then loses nodes under load from 8 clients, and checks the
promise: every answer is a 202 or a 503 with Retry-After in time, and every 202 is on the
queue, read from a node that survived.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509

from deploy.broker import RABBITMQ_BIN, BrokerCluster, BrokerError, BrokerNode, start_cluster
from deploy.function_process import FunctionProcess
from tests.e2e.conftest import function_env
from tests.e2e.faults import (
    FAULT_ENV,
    DurableRoute,
    Load,
    Outcome,
    assert_the_promise_holds,
    log_records,
    longest_503_run,
    post,
    wait_for_202,
)
from tests.e2e.test_topology import manifest_on, snapshot, topology

QUEUES_CLI = RABBITMQ_BIN / "rabbitmq-queues"
QUORUM = {"x-queue-type": "quorum"}
LOAD_SECONDS = 20.0
KILL_AFTER = 7.0
# From a node's loss to the first 202 through another node: a leader election (well under a
# second here) and a reconnection, on a loaded 2-core machine.
FAILOVER_WITHIN = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerCluster]:
    started = start_cluster(tmp_path_factory.mktemp("cluster"), size=3, purpose="cluster")
    pids: list[int | None] = []
    try:
        yield started
    finally:
        pids = [node.server_pid for node in started.nodes] + [started.nodes[0].epmd_pid]
        started.stop()
    survivors = [pid for pid in pids if pid and Path(f"/proc/{pid}").exists()]
    assert not survivors + started.leftover_pids(), "processes of the cluster survived its stop"


@pytest.fixture(autouse=True)
def whole_cluster(cluster: BrokerCluster) -> None:
    """Each test starts with the three nodes running and every quorum queue on all three."""
    for node in cluster.nodes:
        node.start_node()  # nothing to do when it runs
    wait_until_fully_replicated(cluster)


def wait_until_fully_replicated(cluster: BrokerCluster, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while True:
        listing = cluster.ctl(
            "list_queues", "name", "type", "online", "--quiet", "--no-table-headers"
        )
        short = [
            row
            for row in listing.splitlines()
            if "\tquorum\t" in row and row.count("@") < len(cluster.nodes)
        ]
        if not short:
            return
        assert time.monotonic() < deadline, f"quorum queues short of a replica: {short}"
        time.sleep(0.5)


@dataclass
class Publishing:
    """vm_isolate publishing to a quorum queue of its own, and its first answer, a 202."""

    route: DurableRoute
    server: FunctionProcess
    first: Outcome


def publishing(
    cluster: BrokerCluster, run_function: Callable[..., FunctionProcess], *, leader: BrokerNode
) -> Publishing:
    """A quorum queue led by `leader` (declared through it) and vm_isolate publishing to it,
    the three nodes in its AMQP_URL in the cluster's order; after one 202."""
    route = DurableRoute(leader, arguments=QUORUM)
    assert cluster.leader_of(route.queue) is leader
    env = function_env(cluster.nodes[0], route.exchange, **cluster.client_env(), **FAULT_ENV)
    server = run_function(env)
    first = post(None, server.url)
    assert first.status == 202
    return Publishing(route, server, first)


def connected_node(cluster: BrokerCluster, logs: Path) -> BrokerNode:
    """The node the function connected to last, as its log says."""
    connected = [r for r in log_records(logs, "event_relay.publisher") if "broker" in r]
    assert connected, "the function logged no connection"
    port = int(connected[-1]["broker"].rsplit(":", 1)[1])
    return next(node for node in cluster.nodes if node.port == port)


def workers(server: FunctionProcess) -> str:
    """The PIDs of the function's worker processes (gunicorn restarts a worker that dies)."""
    assert server.process is not None
    assert server.process.poll() is None
    pid = server.process.pid
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().strip()


@dataclass
class Kill:
    node: BrokerNode
    at: float  # time.monotonic(), as the outcomes
    wall: float  # time.time() at the same moment, as the broker's logs


def kill_under_load(server: FunctionProcess, victim: BrokerNode) -> tuple[list[Outcome], Kill]:
    """8 clients for LOAD_SECONDS; `kill -9` of `victim` after KILL_AFTER seconds."""
    with Load(server.url, clients=8) as load:
        time.sleep(KILL_AFTER)
        kill = Kill(victim, time.monotonic(), time.time())
        victim.kill()
        time.sleep(LOAD_SECONDS - KILL_AFTER)
    return load.outcomes, kill


def election_seconds(cluster: BrokerCluster, queue: str, kill: Kill) -> float:
    """Seconds from the kill until a surviving node logged that it took the lead of `queue`."""
    took_lead = re.compile(
        rf"^(\S+ \S+) \[\w+\] <[\d.]+> queue '{re.escape(queue)}' in vhost '/': "
        r"candidate -> leader"
    )
    deadline = time.monotonic() + 10
    while True:
        for node in cluster.running_nodes():
            for log in node.log_dir.glob("*.log"):
                for line in log.read_text(errors="replace").splitlines():
                    if (found := took_lead.match(line)) and (
                        elected := datetime.fromisoformat(found[1]).timestamp()
                    ) > kill.wall:
                        return elected - kill.wall
        assert time.monotonic() < deadline, f"no new leader of {queue} logged"
        time.sleep(0.2)


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    """The figures of a run, on the terminal even when pytest captures the output."""
    with capsys.disabled():
        print(f"\n  cluster: {text}")


# --- the cluster itself --------------------------------------------------------------------


def test_the_nodes_form_one_cluster_each_with_its_own_ports_and_certificate(
    cluster: BrokerCluster,
) -> None:
    names = {node.node_name for node in cluster.nodes}
    for node in cluster.nodes:  # each node sees the three as running members
        status = node.ctl("cluster_status", "--formatter", "json")
        assert set(re.findall(r"relay-cluster-[\w-]+@localhost", status)) >= names
        assert all(status.count(name) >= 2 for name in names)  # a disk node, and running
    ports = [port for node in cluster.nodes for port in (node.port, node.dist_port)]
    assert len(set(ports)) == 6
    ca = x509.load_pem_x509_certificate(cluster.nodes[0].tls.ca_cert.read_bytes())
    served = set()
    for node in cluster.nodes:
        assert node.tls.ca_cert == cluster.nodes[0].tls.ca_cert  # one CA for all
        certificate = x509.load_pem_x509_certificate(node.tls.server_cert.read_bytes())
        assert certificate.issuer == ca.subject
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in sans.get_values_for_type(x509.DNSName)
        assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
        served.add(certificate.serial_number)
        assert node.tls.server_key.stat().st_mode & 0o777 == 0o600
    assert len(served) == 3  # a certificate of its own per node


# --- topology ------------------------------------------------------------------------------


def test_topology_declares_quorum_queues_on_all_three_nodes_and_twice_changes_nothing(
    cluster: BrokerCluster,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in cluster.client_env().items():
        monkeypatch.setenv(name, value)
    exchange = f"topo-{uuid.uuid4().hex[:8]}"
    manifest = manifest_on(tmp_path, exchange)
    seen_from = cluster.nodes[2]  # not the node the topology connects to (the first listed)

    first, _ = topology(manifest, capsys)
    before = snapshot(seen_from, exchange)
    second, output = topology(manifest, capsys)

    assert (first, second) == (0, 0)
    assert snapshot(seen_from, exchange) == before
    declares = [line for line in output.splitlines() if ".declare " in line]
    assert len(declares) == 7
    assert all(line.endswith(": exists") for line in declares), output
    listing = seen_from.ctl(
        "list_queues", "name", "type", "members", "--quiet", "--no-table-headers"
    )
    queues = {
        name: (kind, members)
        for name, kind, members in (row.split("\t") for row in listing.splitlines())
        if name.startswith(exchange)
    }
    assert len(queues) == 5  # four event types and the dead-letter queue
    everywhere = {node.node_name for node in cluster.nodes}
    for kind, members in queues.values():
        assert kind == "quorum"
        assert set(re.findall(r"[\w.-]+@localhost", members)) == everywhere
    assert f"{exchange}.dead-letter" in queues
    bindings = {tuple(line.split("\t")[1:4]) for line in before if "list_bindings" in line}
    assert (f"{exchange}.dead-letter", f"{exchange}.dead-letter", "") in bindings
    assert (exchange, f"{exchange}.vm_isolate", "vm.isolate") in bindings


# --- nodes lost under load -----------------------------------------------------------------


@pytest.mark.slow
def test_the_node_the_function_publishes_through_killed_under_load(
    cluster: BrokerCluster,
    run_function: Callable[..., FunctionProcess],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The worst case, and the default one: the function's connection and the queue's leader
    on the node that dies (functions and `topology` connect to the first node listed, and a
    quorum queue's leader is placed on the node it was declared through)."""
    first, second, third = cluster.nodes
    run = publishing(cluster, run_function, leader=first)
    assert connected_node(cluster, tmp_path) is first
    before = workers(run.server)

    outcomes, kill = kill_under_load(run.server, first)

    after_kill = [o for o in outcomes if o.ended > kill.at]
    recovered = min(
        (o for o in after_kill if o.status == 202 and o.started > kill.at),
        key=lambda o: o.started,
        default=None,
    )
    turned_away = longest_503_run(after_kill)
    statuses = Counter(o.status for o in after_kill)
    report(
        capsys,
        f"kill -9 of the function's node and leader: longest run of 503s {turned_away:.2f} s, "
        f"first 202 through another node "
        f"{recovered.started - kill.at if recovered else float('nan'):.2f} s after the kill, "
        f"{statuses[503]} x 503 and {statuses[202]} x 202 from the kill on",
    )
    assert recovered is not None, "no 202 after the kill"
    assert recovered.started - kill.at < FAILOVER_WITHIN
    assert turned_away < FAILOVER_WITHIN
    assert connected_node(cluster, tmp_path) in (second, third)
    assert workers(run.server) == before  # the same worker failed over: no restart
    assert_the_promise_holds([run.first, *outcomes], run.route.message_ids(via=second))
    run.route.delete(via=second)


@pytest.mark.slow
def test_the_queue_leader_killed_under_load_costs_no_503_after_the_election(
    cluster: BrokerCluster,
    run_function: Callable[..., FunctionProcess],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, second, _ = cluster.nodes
    run = publishing(cluster, run_function, leader=second)
    assert connected_node(cluster, tmp_path) is first

    outcomes, kill = kill_under_load(run.server, second)

    election = election_seconds(cluster, run.route.queue, kill)
    refused = [o for o in outcomes if o.status == 503]
    late = [o for o in refused if o.started > kill.at + election]
    slowest = max((o.seconds for o in outcomes if o.ended > kill.at), default=0.0)
    report(
        capsys,
        f"kill -9 of the queue's leader only: new leader after {election:.2f} s, "
        f"{len(refused)} x 503 ({len(late)} after the election), slowest answer {slowest:.2f} s",
    )
    assert not late, late
    assert cluster.leader_of(run.route.queue) is not second
    assert connected_node(cluster, tmp_path) is first  # its connection was never lost
    assert_the_promise_holds([run.first, *outcomes], run.route.message_ids(via=first))
    run.route.delete(via=first)


def wait_until_safe_to_stop(node: BrokerNode, within: float = 60) -> None:
    """What operators check before stopping a node: no quorum queue would lose its majority."""
    deadline = time.monotonic() + within
    while True:
        try:
            node.cli(QUEUES_CLI, "check_if_node_is_quorum_critical")
            return
        except BrokerError:  # a restarted replica is still catching up
            assert time.monotonic() < deadline, f"{node.node_name} stays quorum-critical"
            time.sleep(0.5)


@pytest.mark.slow
def test_a_rolling_restart_under_load_loses_no_accepted_event(
    cluster: BrokerCluster,
    run_function: Callable[..., FunctionProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = cluster.nodes[0]
    run = publishing(cluster, run_function, leader=first)
    with Load(run.server.url, clients=8) as load:
        time.sleep(2)
        for node in cluster.nodes:
            wait_until_safe_to_stop(node)
            node.stop_node()
            node.start_node()
        restarted_at = time.monotonic()
        load.wait_for_202_after(restarted_at, within=FAILOVER_WITHIN)
        time.sleep(1)

    statuses = Counter(o.status for o in load.outcomes)
    report(
        capsys,
        f"rolling restart of the three nodes: {statuses[503]} x 503 and {statuses[202]} x 202, "
        f"longest run of 503s {longest_503_run(load.outcomes):.2f} s",
    )
    assert_the_promise_holds([run.first, *load.outcomes], run.route.message_ids(via=first))
    run.route.delete(via=first)


@pytest.mark.slow
def test_with_two_nodes_down_nothing_is_accepted_and_service_resumes_when_one_returns(
    cluster: BrokerCluster,
    run_function: Callable[..., FunctionProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, second, third = cluster.nodes
    run = publishing(cluster, run_function, leader=first)

    second.stop_node()
    third.stop_node()
    # The quorum queue has one replica of three: no message can be confirmed.
    minority = [post(None, run.server.url) for _ in range(4)]
    second.start_node()
    back_at = time.monotonic()
    resumed = wait_for_202(run.server.url, within=FAILOVER_WITHIN + 10)
    report(
        capsys,
        f"two nodes down: {Counter(o.problem for o in minority)}; "
        f"the first 202 {resumed[-1].ended - back_at:.2f} s after a node was back",
    )

    assert {o.status for o in minority} == {503}
    outcomes = [run.first, *minority, *resumed]
    assert_the_promise_holds(outcomes, run.route.message_ids(via=first))
    run.route.delete(via=first)
