"""The benchmark's own queue on the private broker: every row publishes into it, and after each
cell its depth must equal the number of 2xx answers (then it is purged for the next cell).

A quorum queue, as `python -m deploy topology` declares every event type's: a classic queue
holding a cell's backlog of persistent messages (17,000 from (a) at 80 clients, 4,000 from (f))
stalled confirms for 50-130 ms at a time, which made (a)'s p99 at 80 clients 41-80 ms where a
quorum queue gives 26-32 (and (f)'s the same 100-140 ms either way)."""

from __future__ import annotations

import ssl
from types import TracebackType

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from deploy.broker import BrokerNode

EXCHANGE = "event-relay"
ROUTING_KEY = "vm.isolate"
QUEUE = "bench.vm.isolate"


class BenchQueue:
    """A topic exchange `event-relay` and a quorum queue bound to `vm.isolate`."""

    def __init__(self, node: BrokerNode) -> None:
        context = ssl.create_default_context(cafile=str(node.tls.ca_cert))
        context.load_cert_chain(str(node.tls.client_cert), str(node.tls.client_key))
        self._connection = BlockingConnection(
            pika.ConnectionParameters(
                host=node.host,
                port=node.port,
                credentials=pika.PlainCredentials(node.user, node.password),
                ssl_options=pika.SSLOptions(context, server_hostname=node.host),
                connection_attempts=1,
                socket_timeout=5,
                heartbeat=0,  # idle for minutes while the cells run
                blocked_connection_timeout=30,
            )
        )
        self._channel: BlockingChannel = self._connection.channel()
        self._channel.exchange_declare(EXCHANGE, "topic", durable=True)
        self._channel.queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        self._channel.queue_bind(QUEUE, EXCHANGE, ROUTING_KEY)

    def depth(self) -> int:
        return int(self._channel.queue_declare(QUEUE, passive=True).method.message_count)

    def sample_size(self) -> int | None:
        """Bytes of one message waiting in the queue (it is taken off), or None when empty."""
        method, _properties, body = self._channel.basic_get(QUEUE, auto_ack=True)
        return None if method is None else len(body)

    def purge(self) -> None:
        self._channel.queue_purge(QUEUE)

    def close(self) -> None:
        if self._connection.is_open:
            self._channel.queue_delete(QUEUE)
            self._connection.close()

    def __enter__(self) -> BenchQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
