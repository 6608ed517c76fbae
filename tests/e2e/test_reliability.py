"""Delivery guarantees on a healthy broker: safe retries and concurrency.

The stress test runs once by default; `STRESS_RUNS=50 pytest -k concurrent` repeats it against
the same servers, as done locally before a release.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from deploy.broker import BrokerNode
from deploy.function_process import FunctionProcess
from tests.e2e.conftest import EVENT, Route, function_env

CLIENTS = 32
REQUESTS_PER_CLIENT = 10
STRESS_RUNS = int(os.environ.get("STRESS_RUNS", "1"))


pytestmark = pytest.mark.usefixtures("empty_queue")


@pytest.fixture(scope="module")
def servers(
    broker: BrokerNode, route: Route, start_function: Callable[..., FunctionProcess]
) -> Callable[[str | None], FunctionProcess]:
    """One function server per WORKERS setting (None: the default), started on first use."""
    started: dict[str | None, FunctionProcess] = {}

    def server(workers: str | None) -> FunctionProcess:
        if workers not in started:
            extra = {"WORKERS": workers} if workers else {}
            started[workers] = start_function(
                "vm_isolate", function_env(broker, route.exchange, **extra)
            )
        return started[workers]

    return server


def post(client: httpx.Client, url: str, key: str | None = None) -> httpx.Response:
    headers = {"idempotency-key": key} if key else {}
    return client.post(url, json=EVENT, headers=headers, timeout=30)


# --- 5. safe retries -----------------------------------------------------------------------


def test_a_retry_with_the_same_idempotency_key_carries_the_same_message_id(
    servers: Callable[[str | None], FunctionProcess], route: Route
) -> None:
    key = f"alert-{uuid.uuid4().hex}"
    with httpx.Client() as client:
        answers = [post(client, servers(None).url, key) for _ in range(2)]

    assert [a.status_code for a in answers] == [202, 202]
    assert [a.json()["id"] for a in answers] == [key, key]
    # At least once: both copies are delivered; consumers deduplicate on message_id.
    assert [m.properties.message_id for m in route.messages()] == [key, key]


# --- 6. concurrency ------------------------------------------------------------------------


def broker_links(server: FunctionProcess, broker: BrokerNode) -> dict[int, list[int]]:
    """For each process of `server` (master and workers): its local ports connected to the
    broker, from `ss`."""
    assert server.process is not None
    master = server.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    pids = {master, *map(int, children)}
    listing = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"dport = :{broker.port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    links: dict[int, list[int]] = {pid: [] for pid in pids}
    for line in listing.splitlines():
        local_port = int(line.split()[2].rsplit(":", 1)[1])
        for pid in map(int, re.findall(r"pid=(\d+)", line)):
            if pid in links:
                links[pid].append(local_port)
    return links


def channels_per_connection(broker: BrokerNode, local_ports: list[int]) -> list[int]:
    rows = broker.ctl("list_connections", "peer_port", "channels", "--silent").splitlines()
    counts = {int(port): int(channels) for port, channels in (row.split() for row in rows)}
    return [counts[port] for port in local_ports]


@pytest.mark.parametrize("run", range(STRESS_RUNS))
@pytest.mark.parametrize("workers", [None, "2"], ids=["default", "workers-2"])
def test_32_concurrent_clients_get_exactly_one_message_per_202(
    servers: Callable[[str | None], FunctionProcess],
    broker: BrokerNode,
    route: Route,
    workers: str | None,
    run: int,
) -> None:
    server = servers(workers)

    def client(_: int) -> list[httpx.Response]:
        with httpx.Client() as http:
            return [post(http, server.url) for _ in range(REQUESTS_PER_CLIENT)]

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [a for batch in pool.map(client, range(CLIENTS)) for a in batch]

    assert Counter(a.status_code for a in answers) == {202: CLIENTS * REQUESTS_PER_CLIENT}
    accepted = [a.json()["id"] for a in answers]
    assert len(set(accepted)) == len(accepted)
    queued = [m.properties.message_id for m in route.messages()]
    assert Counter(queued) == Counter(accepted)  # one message per 202, none else

    # Each process has a connection of its own (the master none) with one channel.
    links = broker_links(server, broker)
    assert links[server.process.pid if server.process else 0] == []
    per_worker = [ports for pid, ports in links.items() if ports]
    assert 1 <= len(per_worker) <= int(workers or 1)
    assert all(len(ports) == 1 for ports in per_worker), links
    assert channels_per_connection(broker, [p for ports in per_worker for p in ports]) == [1] * len(
        per_worker
    )
