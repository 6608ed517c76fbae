"""deploy.broker: the private node serves mutual TLS only, and survives a restart."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import AMQPConnectionError

from deploy import broker as broker_module
from deploy.broker import BrokerError, BrokerNode, issue_foreign_client


def publish_and_get(channel: BlockingChannel, queue: str, body: bytes) -> bytes | None:
    """Publish to `queue` with a confirm, then fetch one message from it."""
    channel.confirm_delivery()
    channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2), mandatory=True)
    got: bytes | None = channel.basic_get(queue, auto_ack=True)[2]
    return got


def test_mtls_client_publishes_and_consumes(amqp_channel: BlockingChannel) -> None:
    queue = amqp_channel.queue_declare("", exclusive=True).method.queue
    assert publish_and_get(amqp_channel, queue, b"hello") == b"hello"


def test_client_env_carries_a_working_url(broker: BrokerNode) -> None:
    env = broker.client_env()
    assert env["AMQP_URL"] == f"amqps://relay:{broker.password}@localhost:{broker.port}/%2F"
    for name in ("AMQP_CA_CERT_FILE", "AMQP_CLIENT_CERT_FILE", "AMQP_CLIENT_KEY_FILE"):
        assert Path(env[name]).is_file()
    assert Path(env["AMQP_CLIENT_KEY_FILE"]).stat().st_mode & 0o777 == 0o600
    # What a function does with these variables.
    context = ssl.create_default_context(cafile=env["AMQP_CA_CERT_FILE"])
    context.load_cert_chain(env["AMQP_CLIENT_CERT_FILE"], env["AMQP_CLIENT_KEY_FILE"])
    params = pika.URLParameters(env["AMQP_URL"])
    params.ssl_options = pika.SSLOptions(context, server_hostname="localhost")
    connection = pika.BlockingConnection(params)
    try:
        assert connection.is_open
    finally:
        connection.close()


def test_client_without_cert_is_refused(connect_broker: Callable[..., BlockingConnection]) -> None:
    # Under TLS 1.3 the refusal comes after the client's handshake: pika reports the server's
    # alert (CERTIFICATE_REQUIRED, UNKNOWN_CA) or, when the close wins the race, a bare
    # SSLEOFError, wrapped in an AMQPConnectionError either way.
    with pytest.raises(AMQPConnectionError):
        connect_broker(send_client_cert=False)


def test_client_cert_from_foreign_ca_is_refused(
    connect_broker: Callable[..., BlockingConnection], tmp_path: Path
) -> None:
    cert, key, _foreign_ca = issue_foreign_client(tmp_path)
    with pytest.raises(AMQPConnectionError):
        connect_broker(client_cert=cert, client_key=key)


def test_client_that_does_not_trust_the_server_ca_refuses_it(
    connect_broker: Callable[..., BlockingConnection], tmp_path: Path
) -> None:
    _cert, _key, foreign_ca = issue_foreign_client(tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        connect_broker(ca_cert=foreign_ca)


def test_restart_serves_the_same_port_and_keeps_durable_messages(
    broker: BrokerNode, connect_broker: Callable[..., BlockingConnection]
) -> None:
    channel = connect_broker().channel()
    channel.queue_declare("restart-check", durable=True)
    channel.confirm_delivery()
    channel.basic_publish("", "restart-check", b"kept", pika.BasicProperties(delivery_mode=2))
    port, epmd_pid = broker.port, broker.epmd_pid

    broker.stop_node()
    assert not broker.running
    with pytest.raises(AMQPConnectionError):
        connect_broker()
    broker.start_node()

    assert (broker.port, broker.epmd_pid) == (port, epmd_pid)
    assert "restart-check\t1" in broker.ctl("list_queues", "name", "messages")
    channel = connect_broker().channel()
    assert channel.basic_get("restart-check", auto_ack=True)[2] == b"kept"
    channel.queue_delete("restart-check")


def test_missing_rabbitmq_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_module, "SERVER", Path("/nonexistent/rabbitmq-server"))
    with pytest.raises(BrokerError, match="apt-get install -y rabbitmq-server"):
        broker_module.ensure_rabbitmq_installed(install=False)


def test_a_folder_that_is_not_a_broker_folder_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("mine")
    with pytest.raises(BrokerError, match="not a broker folder"):
        BrokerNode(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "mine"


def test_ports_are_below_the_ephemeral_range(broker: BrokerNode) -> None:
    ports = {broker.port, broker.dist_port, broker.epmd_port}
    assert len(ports) == 3
    assert all(20000 <= port < 32000 for port in ports)
