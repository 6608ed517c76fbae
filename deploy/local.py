"""`python -m deploy local` (`nox -s dev`): every function of the manifest on this machine.

A private RabbitMQ node with mutual TLS (certificates under .dev/), or with `--cluster` a
three-node cluster, the topology, one functions-framework process per function on its own port,
then a tail of the queues until Ctrl-C or SIGTERM, saying which node each function publishes
through as it connects; everything started is stopped on the way out. With the manifest's
spool: Google's Pub/Sub emulator, the topic, the drain and a push subscription to it, so
stopping the broker (`.dev/broker-ctl stop_app`) shows alerts spooled, then drained once it is
back.
"""

from __future__ import annotations

import base64
import os
import secrets
import shlex
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType

from deploy import EVENTS, REPO, topology
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
from deploy.manifest import Deployable, Deployment, Drain, Function
from deploy.pubsub_emulator import PubSubEmulator, emulator_missing
from deploy.tail import tail_until_stopped
from shared.config import Settings

DEV = REPO / ".dev"
SIGNED = ("standard-webhooks", "grafana-hmac")  # no curl one-liner: each request is signed


def say(text: str) -> None:
    print(f"dev: {text}", flush=True)


def run_local(
    deployment: Deployment,
    *,
    dev_dir: Path = DEV,
    port: int = 8081,
    queue_type: topology.QueueType = "quorum",
    cluster: bool = False,
) -> None:
    """Run everything until Ctrl-C or SIGTERM, then stop it all: functions, then the broker."""
    # Both explicitly: a process started from a script or in the background inherits SIGINT
    # ignored, and Python then leaves it ignored instead of raising KeyboardInterrupt.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _interrupt)
    # A developer's shell may hold settings for a real broker or Secret Manager: they would mix
    # with the local ones (and `NAME` plus `NAME_SECRET` is refused).
    for name in Settings.variables():
        os.environ.pop(name, None)
    ensure_rabbitmq_installed(install=True)  # installs only as root with apt, and says so
    functions = deployment.functions
    with ExitStack() as stack, _shielded_exit():
        broker, nodes = _start_broker(dev_dir / "broker", cluster=cluster)
        stack.callback(_stop_broker, broker)
        os.environ.update(broker.client_env())  # topology and tail read the functions' settings
        ctls = [
            node.write_ctl_script(dev_dir / f"broker-ctl{'' if len(nodes) == 1 else number}")
            for number, node in enumerate(nodes, 1)
        ]
        connection = topology.connect()
        try:
            topology.apply(connection, topology.plan(functions, queue_type), lambda s: say(s))
        finally:
            connection.close()
        logs = dev_dir / "logs"
        logs.mkdir(exist_ok=True)

        def serve(fn: Deployable, number: int, env: dict[str, str]) -> FunctionProcess:
            server = FunctionProcess(
                fn.entry_point,  # functions-framework's --target
                _port(port + number),
                {**local_env(fn), **env},
                source_dir=fn.source_dir,
                log_path=logs / f"{fn.name}.log",
            )
            stack.callback(server.stop)
            return server.start()

        spool = _spool(deployment.drain, dev_dir, stack, serve, len(functions))
        examples = []
        for number, fn in enumerate(functions):
            secret, curl_auth, query = dev_credentials(fn)
            server = serve(fn, number, {**spool, "AUTH_SECRETS": secret})
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
        if spool and len(ctls) == 1:
            say(
                f"the spool is on: stop the broker with `{ctls[0]} stop_app`, post an alert "
                f"(202, delivery spooled), start it with `{ctls[0]} start_app` and watch the "
                "alert arrive"
            )
        say(f"function logs in {logs}; tailing the queues, Ctrl-C stops everything")
        try:
            tail_until_stopped(topology.connect, functions, say=say, out=sys.stdout)
        except KeyboardInterrupt:
            say("stopping the functions, then the broker ...")


def _spool(
    drain: Drain | None,
    dev_dir: Path,
    stack: ExitStack,
    serve: Callable[[Deployable, int, dict[str, str]], FunctionProcess],
    number: int,
) -> dict[str, str]:
    """With the manifest's spool: the emulator, the topic, the drain and its push subscription;
    the environment the functions then need. Without (or without an emulator here): none."""
    if drain is None or drain.spool_topic is None:
        return {}
    if (missing := emulator_missing()) is not None:
        say(f"no spool: {missing}")
        return {"SPOOL_TOPIC": ""}  # unset: the functions answer 503 while the broker is down
    _, project, _, topic = drain.spool_topic.split("/")
    say(f"starting Google's Pub/Sub emulator in {dev_dir / 'pubsub'} ...")
    emulator = PubSubEmulator(dev_dir / "pubsub", project=project).start()
    stack.callback(emulator.stop)
    emulator.create_topic(topic)
    server = serve(drain, number, emulator.client_env())
    emulator.create_subscription(f"{topic}-drain", topic, push_endpoint=server.url)
    say(f"spool: topic {drain.spool_topic} on {emulator.host}, pushed to the drain at {server.url}")
    return emulator.client_env()


def local_env(fn: Deployable) -> dict[str, str]:
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
    """Ctrl-C and SIGTERM (nox, a closing terminal) take the same clean way out."""
    raise KeyboardInterrupt
