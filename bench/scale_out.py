"""What a scale-out costs the broker: N new instances each opening their connection at once.

Every instance of a function opens one connection per worker process: mutual TLS, AMQP, one
channel in confirm mode, as shared.publisher does. A scale-out of N instances is N of those
handshakes at the same moment. This opens N such connections at once from one client process
(pika's asyncio adapter, one event loop) and measures the broker around it: its CPU
(beam.smp's user + system time from /proc) while they open, and its memory (RabbitMQ's own
breakdown, rabbit_vm:memory(), and the beam's RSS) with them open.

    python -m bench.scale_out N     the client: waits for "open", opens, reports, waits for
                                    "close", closes; reads the broker settings like the baselines
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from bench.baselines.common import pika_parameters
from bench.machine import cpu_seconds, process_tree, rss_kib
from deploy.broker import BrokerNode
from shared.amqp_connection import Connection

HEARTBEAT_SECONDS = 30  # shared.config's default AMQP_HEARTBEAT
IDLE_SECONDS = 1.0  # how long the broker's idle CPU is sampled, before and with the connections
_MEMORY_ITEM = re.compile(r"\{(\w+),(\d+)\}")
CONNECTION_MEMORY = (
    "connection_readers",
    "connection_writers",
    "connection_channels",
    "connection_other",
)


# --- the client -------------------------------------------------------------------------------


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _open_one(parameters: Any, loop: asyncio.AbstractEventLoop) -> tuple[Any, asyncio.Future[None]]:
    """Start opening a connection and its channel in confirm mode, as shared.publisher does;
    the future resolves once the broker's confirm.select-ok arrives."""
    ready: asyncio.Future[None] = loop.create_future()

    def resolve(_frame: Any) -> None:
        if not ready.done():
            ready.set_result(None)

    def fail(_connection: Any, error: Any) -> None:
        if not ready.done():
            ready.set_exception(RuntimeError(repr(error)))

    def confirm_mode(channel: Any) -> None:
        channel.confirm_delivery(ack_nack_callback=lambda _frame: None, callback=resolve)

    connection = Connection(  # the publisher's own, on the loop's TLS transport
        parameters,
        loop=loop,
        on_open_callback=lambda c: c.channel(on_open_callback=confirm_mode),
        on_open_error_callback=fail,
    )
    return connection, ready


async def _client(count: int) -> None:
    """Open `count` connections at once on "open", report, close them on "close"."""
    loop = asyncio.get_running_loop()
    parameters = pika_parameters()
    parameters.heartbeat = HEARTBEAT_SECONDS
    parameters.stack_timeout = parameters.socket_timeout = 30  # a storm takes a while
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    cpu, started = _cpu(), time.perf_counter()
    connections, waits = zip(*(_open_one(parameters, loop) for _ in range(count)), strict=True)
    outcomes = await asyncio.gather(*waits, return_exceptions=True)
    failures = sum(isinstance(outcome, BaseException) for outcome in outcomes)
    report = {
        "seconds": time.perf_counter() - started,
        "client_cpu_s": _cpu() - cpu,
        "opened": count - failures,
        "failed": failures,
    }
    print(json.dumps(report), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    for connection in connections:
        if connection.is_open:
            connection.close()
    await asyncio.sleep(0.5)  # the close handshakes
    print("closed", flush=True)


# --- the measurement ---------------------------------------------------------------------------


@dataclass
class ScaleOut:
    connections: int
    opened: int
    failed: int
    seconds: float  # until the last channel was in confirm mode, as seen by the one client
    client_cpu_ms_per_connection: float
    broker_cpu_ms_per_connection: float  # the broker's CPU for the handshakes, idle CPU taken off
    broker_idle_cores_before: float
    broker_idle_cores_with_connections: float
    memory_kib_per_connection: float  # RabbitMQ's connection_* memory (readers, writers, ...)
    erlang_kib_per_connection: float  # everything the Erlang VM allocated
    rss_kib_per_connection: float  # the beam's resident memory
    listed_connections: int  # as rabbitmqctl list_connections counts them, with them open

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def broker_memory(node: BrokerNode) -> dict[str, int]:
    """RabbitMQ's memory breakdown, in bytes (rabbit_vm:memory(), as `memory_breakdown`)."""
    text = node.ctl("eval", "rabbit_vm:memory().")
    return {name: int(value) for name, value in _MEMORY_ITEM.findall(text)}


def _idle_cores(pids: list[int], seconds: float) -> float:
    before = cpu_seconds(pids)
    time.sleep(seconds)
    return (cpu_seconds(pids) - before) / seconds


def measure(node: BrokerNode, count: int, env: dict[str, str]) -> ScaleOut:
    """Open `count` connections at once to `node` and measure what they cost it."""
    assert node.server_pid is not None
    broker = process_tree(node.server_pid)
    client = subprocess.Popen(
        [sys.executable, "-m", "bench.scale_out", str(count)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdin is not None
    assert client.stdout is not None
    try:
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError("the scale-out client did not start")
        memory_before, rss_before = broker_memory(node), sum(rss_kib(p) for p in broker)
        idle_before = _idle_cores(broker, IDLE_SECONDS)  # rabbitmqctl's own visit settles too
        cpu_before, started = cpu_seconds(broker), time.perf_counter()
        client.stdin.write("open\n")
        client.stdin.flush()
        report = json.loads(client.stdout.readline())
        # The broker finishes its side (channel.open-ok, confirm.select-ok) as the client sees
        # the last answer; anything after that is idle work, which is subtracted.
        handshakes = cpu_seconds(broker) - cpu_before
        handshakes -= idle_before * (time.perf_counter() - started)
        idle_with = _idle_cores(broker, IDLE_SECONDS)
        memory_after, rss_after = broker_memory(node), sum(rss_kib(p) for p in broker)
        listed = sum(
            1 for line in node.ctl("list_connections", "--silent", "name").splitlines() if line
        )
        client.stdin.write("close\n")
        client.stdin.flush()
        client.stdout.readline()
        client.wait(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    opened = max(int(report["opened"]), 1)

    def per_connection_kib(before: float, after: float) -> float:
        return (after - before) / 1024 / opened

    def connection_bytes(memory: dict[str, int]) -> int:
        return sum(memory.get(name, 0) for name in CONNECTION_MEMORY)

    return ScaleOut(
        connections=count,
        opened=int(report["opened"]),
        failed=int(report["failed"]),
        seconds=float(report["seconds"]),
        client_cpu_ms_per_connection=1000 * float(report["client_cpu_s"]) / opened,
        broker_cpu_ms_per_connection=1000 * max(handshakes, 0.0) / opened,
        broker_idle_cores_before=idle_before,
        broker_idle_cores_with_connections=idle_with,
        memory_kib_per_connection=per_connection_kib(
            connection_bytes(memory_before), connection_bytes(memory_after)
        ),
        erlang_kib_per_connection=per_connection_kib(
            memory_before.get("erlang", 0), memory_after.get("erlang", 0)
        ),
        rss_kib_per_connection=(rss_after - rss_before) / opened,
        listed_connections=listed,
    )


if __name__ == "__main__":
    asyncio.run(_client(int(sys.argv[1])))
