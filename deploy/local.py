"""`python -m deploy local` (`nox -s dev`): every function of the manifest on this machine.

A private RabbitMQ node with mutual TLS (certificates under .dev/), or with `--cluster` a
three-node cluster, the topology, one functions-framework process per function on its own port,
then a tail of the queues until Ctrl-C or SIGTERM, saying which node each function publishes
through as it connects; everything started is stopped on the way out.
"""

from __future__ import annotations

import base64
import os
import secrets
import shlex
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType

from deploy import REPO, topology
from deploy.broker import (
    BrokerCluster,
    BrokerNode,
    ensure_rabbitmq_installed,
    free_port,
    start_broker,
    start_cluster,
)
from deploy.connections import report_connections
from deploy.function_process import FunctionProcess
from deploy.gcloud import runtime_env
from deploy.manifest import Function
from deploy.tail import tail
from shared.config import SETTING_PREFIXES

DEV = REPO / ".dev"
EVENTS = REPO / "tests" / "events"
SIGNED = ("standard-webhooks", "grafana-hmac")  # no curl one-liner: each request is signed


def say(text: str) -> None:
    print(f"dev: {text}", flush=True)


def run_local(
    functions: list[Function],
    *,
    dev_dir: Path = DEV,
    port: int = 8081,
    queue_type: topology.QueueType = "quorum",
    cluster: bool = False,
) -> None:
    """Run everything until Ctrl-C or SIGTERM, then stop it all: functions, then the broker."""
    signal.signal(signal.SIGTERM, _interrupt)
    # A developer's shell may hold settings for a real broker or Secret Manager: they would mix
    # with the local ones (and `NAME` plus `NAME_SECRET` is refused).
    for name in [n for n in os.environ if n.startswith(SETTING_PREFIXES)]:
        del os.environ[name]
    ensure_rabbitmq_installed(install=True)  # installs only as root with apt, and says so
    with ExitStack() as stack, _shielded_exit():
        broker, nodes = _start_broker(dev_dir / "broker", cluster=cluster)
        stack.callback(_stop_broker, broker)
        os.environ.update(broker.client_env())  # topology and tail read the functions' settings
        connection = topology.connect()
        stack.callback(connection.close)
        topology.apply(connection, topology.plan(functions, queue_type), lambda s: say(s))
        logs = dev_dir / "logs"
        logs.mkdir(exist_ok=True)
        examples = []
        for number, fn in enumerate(functions):
            secret, curl_auth, query = dev_credentials(fn)
            server = FunctionProcess(
                fn.entry_point,  # functions-framework's --target
                _port(port + number),
                {**local_env(fn), "AUTH_SECRETS": secret},
                source_dir=fn.source_dir,
                log_path=logs / f"{fn.name}.log",
            )
            stack.callback(server.stop)
            server.start()
            examples.append((fn, server.url + query, curl_auth, secret))
        # The functions connect lazily, at their first request: say where, as they do.
        stack.enter_context(
            report_connections({fn.name: logs / f"{fn.name}.log" for fn in functions}, nodes, say)
        )
        print()
        for fn, url, curl_auth, secret in examples:
            print(f"{fn.name}  {url}  -> queue {fn.queue} ({fn.routing_key})")
            if fn.auth and fn.auth.mode in SIGNED:
                print(f"  {fn.auth.mode} signing key: {secret}")
            print(f"  {curl_example(fn, url, curl_auth)}\n", flush=True)
        say(f"function logs in {logs}; tailing the queues, Ctrl-C stops everything")
        try:
            tail(connection, functions, consume=True, out=sys.stdout)
        except KeyboardInterrupt:
            say("stopping the functions, then the broker ...")


def local_env(fn: Function) -> dict[str, str]:
    """The deployed env (WORKERS, AUTH_MODE, env vars) without the cloud's secret references."""
    cloud_refs = {f"{name}{suffix}" for name in fn.secrets for suffix in ("_FILE", "_SECRET")}
    return {k: v for k, v in runtime_env(fn).items() if k not in cloud_refs}


def dev_credentials(fn: Function) -> tuple[str, list[str], str]:
    """(AUTH_SECRETS, curl arguments, URL query) for fn's auth mode, with a fresh secret."""
    token = secrets.token_urlsafe(24)
    match fn.auth.mode if fn.auth else "bearer":
        case "basic":
            return f"dev:{token}", ["-u", f"dev:{token}"], ""
        case "query-token":
            return token, [], f"?token={token}"
        case mode if mode in SIGNED:
            key = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
            return key, [], ""  # signed per request: the example says so
        case _:
            return token, ["-H", f"Authorization: Bearer {token}"], ""


def curl_example(fn: Function, url: str, curl_auth: list[str]) -> str:
    sample = EVENTS / f"{fn.name}.json"
    data = f"@{sample}" if sample.exists() else '{"hostname": "web-01", "source": "curl"}'
    command = shlex.join(
        [
            "curl",
            "-sS",
            "-i",
            *curl_auth,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            data,
            url,
        ]
    )
    if fn.auth and fn.auth.mode in SIGNED:
        command += f"   # add {fn.auth.mode} signature headers, signed with the key printed above"
    return command


def _port(wanted: int) -> int:
    """`wanted` when free, so URLs stay the same from one run to the next; else any free one."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", wanted))
        except OSError:
            return free_port()
    return wanted


def _start_broker(
    folder: Path, *, cluster: bool
) -> tuple[BrokerNode | BrokerCluster, list[BrokerNode]]:
    """A node, or a cluster of three, in `folder`; it and its nodes."""
    if not cluster:
        say(f"starting a private RabbitMQ node with mutual TLS in {folder} ...")
        node = start_broker(folder, purpose="dev")
        return node, [node]
    say(f"starting a private three-node RabbitMQ cluster with mutual TLS in {folder} ...")
    started = start_cluster(folder, size=3, purpose="dev")
    for node in started.nodes:
        say(f"node {node.node_name} on {node.host}:{node.port}")
    return started, started.nodes


def _stop_broker(broker: BrokerNode | BrokerCluster) -> None:
    broker.stop()
    say("stopped")


@contextmanager
def _shielded_exit() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM once stopping starts: a second one (nox sends SIGTERM after
    Ctrl-C) must not cut the cleanup short and leave the broker running."""
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM (nox, a closing terminal) takes the same clean way out as Ctrl-C."""
    raise KeyboardInterrupt
