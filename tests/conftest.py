"""Fixtures shared by all tests: a clean environment and one private mTLS RabbitMQ node."""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import AMQPError

from deploy.broker import BrokerNode, ensure_rabbitmq_installed, start_broker
from deploy.pubsub_emulator import PubSubEmulator, emulator_missing
from shared.config import Settings, settings
from shared.secrets import clear_cache


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts without any event-relay setting (the platform's, such as K_SERVICE,
    included) in os.environ, and with no settings or secrets cached from an earlier test (both
    are cached per process)."""
    for name in Settings.variables():
        monkeypatch.delenv(name, raising=False)  # a developer's shell must not leak in
    settings.cache_clear()
    clear_cache()
    yield
    settings.cache_clear()
    clear_cache()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerNode]:
    """One private RabbitMQ node with a mutual-TLS listener for the whole session."""
    # CI machines are fresh: let them install RabbitMQ; elsewhere say how to.
    ensure_rabbitmq_installed(install=os.environ.get("CI") == "true")
    node = start_broker(tmp_path_factory.mktemp("broker"))
    try:
        yield node
    finally:
        started = [node.server_pid, node.epmd_pid]  # as of now: a test may have restarted it
        node.stop()
    survivors = [pid for pid in started if pid and Path(f"/proc/{pid}").exists()]
    survivors += node.leftover_pids()
    assert not survivors, f"processes of the test broker survived its stop: {survivors}"


def broker_connection_params(
    node: BrokerNode,
    *,
    ca_cert: Path | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    send_client_cert: bool = True,
    port: int | None = None,
) -> pika.ConnectionParameters:
    """pika parameters for `node` over mTLS, checking that the server is "localhost".

    Defaults to the node's CA and client cert; override them to test refusals.
    """
    context = ssl.create_default_context(cafile=str(ca_cert or node.tls.ca_cert))
    if send_client_cert:
        context.load_cert_chain(
            str(client_cert or node.tls.client_cert), str(client_key or node.tls.client_key)
        )
    return pika.ConnectionParameters(
        host=node.host,
        port=port or node.port,
        credentials=pika.PlainCredentials(node.user, node.password),
        ssl_options=pika.SSLOptions(context, server_hostname=node.host),
        connection_attempts=1,
        socket_timeout=5,
        blocked_connection_timeout=10,  # never hang for ever on a broker alarm
    )


@pytest.fixture
def connect_broker(broker: BrokerNode) -> Iterator[Callable[..., BlockingConnection]]:
    """Open BlockingConnections to the test broker (broker_connection_params' keywords);
    those still open are closed after the test."""
    opened: list[BlockingConnection] = []

    def connect(**overrides: Any) -> BlockingConnection:
        connection = pika.BlockingConnection(broker_connection_params(broker, **overrides))
        opened.append(connection)
        return connection

    yield connect
    for connection in opened:
        # is_open stays True after the broker dropped the connection (a restart test): then
        # close() raises, and there is nothing left to close.
        with contextlib.suppress(AMQPError):
            if connection.is_open:
                connection.close()


@pytest.fixture
def amqp_channel(connect_broker: Callable[..., BlockingConnection]) -> BlockingChannel:
    """A channel on a fresh mTLS connection to the test broker (closed after the test)."""
    return connect_broker().channel()


@pytest.fixture(scope="session")
def pubsub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    """Google's Pub/Sub emulator for the whole session; each test makes topics of its own."""
    if (missing := emulator_missing()) is not None:
        pytest.skip(missing)
    emulator = PubSubEmulator(tmp_path_factory.mktemp("pubsub")).start()
    try:
        yield emulator
    finally:
        pid = emulator.pid
        emulator.stop()
    assert pid is not None
    assert not Path(f"/proc/{pid}").exists(), "the emulator survived its stop"
