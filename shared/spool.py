"""The spool: Google Pub/Sub holds what the on-prem broker could not confirm, for the drain.

A spooled message's data is the exact CloudEvents envelope RabbitMQ would have got; its
attributes are what republishing it identically takes (exchange, routing key, the AMQP
properties) and the SHA-256 of the body, so the drain (shared.drain) can refuse a message that
was tampered with or is not ours.

The client library (grpc, ~0.4 s to import) is loaded, and its client built, in a thread of the
worker the first time a message is spooled: never at import, never in the gunicorn master
(gRPC is not fork-safe), never on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pika import BasicProperties

from shared.envelope import APP_ID, PERSISTENT, Message
from shared.errors import SpooledMessageError, SpoolUnavailableError
from shared.schemas import EVENT_TYPES
from shared.vocabulary import RESOLVED, TEST

if TYPE_CHECKING:
    from google.cloud.pubsub_v1 import PublisherClient

EXCHANGE, ROUTING_KEY, DIGEST = "exchange", "routing_key", "body_sha256"
PROPERTIES = ("message_id", "type", "timestamp", "content_type", "content_encoding", "app_id")
_TYPE = re.compile(rf"{re.escape(APP_ID)}\.([a-z][a-z0-9_]*)(?:\.({RESOLVED}|{TEST}))?")


def spooled_attributes(message: Message, exchange: str) -> dict[str, str]:
    """The Pub/Sub attributes of a spooled message: all strings, as Pub/Sub wants."""
    props = message.properties
    attributes = {p: str(getattr(props, p)) for p in PROPERTIES if getattr(props, p) is not None}
    if props.headers:
        attributes["headers"] = json.dumps(props.headers, separators=(",", ":"))
    return {
        **attributes,
        EXCHANGE: exchange,
        ROUTING_KEY: message.routing_key,
        DIGEST: hashlib.sha256(message.body).hexdigest(),
    }


def unspooled(data: bytes, attributes: Mapping[str, str]) -> tuple[str, Message]:
    """The exchange and the message a spooled one stands for, exactly as it was first meant for
    the broker; SpooledMessageError when it cannot be (yet)."""
    missing = [a for a in (EXCHANGE, ROUTING_KEY, DIGEST, "message_id", "type", "timestamp")
               if not attributes.get(a)]  # fmt: skip
    if missing:
        raise SpooledMessageError(f"attributes missing: {', '.join(missing)}", permanent=True)
    if hashlib.sha256(data).hexdigest() != attributes[DIGEST]:
        raise SpooledMessageError("the body does not match its body_sha256", permanent=True)
    kind = _TYPE.fullmatch(attributes["type"])
    if kind is None:
        raise SpooledMessageError(f"type {attributes['type']!r} is not ours", permanent=True)
    event_type, suffix = kind[1], f".{kind[2]}" if kind[2] else ""
    if event_type not in EVENT_TYPES:  # a type newer than this drain: redeploy the drain
        raise SpooledMessageError(f"unknown event type {event_type!r}", permanent=False)
    if attributes[ROUTING_KEY] != EVENT_TYPES[event_type].routing_key + suffix:
        raise SpooledMessageError(
            f"routing key {attributes[ROUTING_KEY]!r} is not {attributes['type']}'s", permanent=True
        )
    try:
        envelope = json.loads(data)
        headers = json.loads(attributes["headers"]) if attributes.get("headers") else None
        timestamp = int(attributes["timestamp"])
    except (ValueError, TypeError):
        raise SpooledMessageError(
            "the body, headers or timestamp is malformed", permanent=True
        ) from None
    if not isinstance(envelope, dict) or (envelope.get("id"), envelope.get("type")) != (
        attributes["message_id"],
        attributes["type"],
    ):
        raise SpooledMessageError("the envelope's id or type is not the message's", permanent=True)
    properties = BasicProperties(
        **{p: attributes.get(p) for p in PROPERTIES if p != "timestamp"},
        timestamp=timestamp,
        delivery_mode=PERSISTENT,
        headers=headers,
    )
    return attributes[EXCHANGE], Message(attributes[ROUTING_KEY], data, properties)


class Spool:
    """Publishes to the SPOOL_TOPIC and answers once Pub/Sub acknowledged."""

    def __init__(self, topic: str, *, emulator_host: str | None = None) -> None:
        self.topic = topic
        self._emulator_host = emulator_host
        # Per process and event loop: a forked worker, or a new loop, builds its own.
        self._client: tuple[int, asyncio.AbstractEventLoop, asyncio.Future[PublisherClient]] | None
        self._client = None

    async def publish(self, message: Message, *, exchange: str, deadline: float) -> None:
        """Return once Pub/Sub holds `message`, by the monotonic `deadline`;
        SpoolUnavailableError otherwise."""
        timeout = max(deadline - time.monotonic(), 0.1)
        try:
            async with asyncio.timeout(timeout):
                client = await asyncio.shield(self._client_future())
                future = client.publish(
                    self.topic,
                    message.body,
                    retry=_retry(timeout),
                    timeout=timeout,
                    **spooled_attributes(message, exchange),
                )
                await asyncio.wrap_future(future)
        except Exception as exc:  # the client library's errors have no common root
            raise SpoolUnavailableError(f"the spool did not take the message: {exc!r}") from exc

    def _client_future(self) -> asyncio.Future[PublisherClient]:
        """The client, built once (in a thread) and again after a failed build."""
        owner = (os.getpid(), asyncio.get_running_loop())
        if self._client is None or self._client[:2] != owner or _failed(self._client[2]):
            building = asyncio.ensure_future(asyncio.to_thread(_new_client, self._emulator_host))
            self._client = (*owner, building)
        return self._client[2]


def _failed(future: asyncio.Future[Any]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


def _retry(timeout: float) -> Any:
    from google.api_core.retry import Retry

    return Retry(initial=0.05, maximum=1.0, timeout=timeout)


def _new_client(emulator_host: str | None) -> PublisherClient:
    from google.cloud.pubsub_v1 import PublisherClient
    from google.cloud.pubsub_v1.types import BatchSettings

    # A message waits at most 5 ms for others to share its request.
    batching = BatchSettings(max_latency=0.005)
    if not emulator_host:
        return PublisherClient(batch_settings=batching)
    import grpc
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

    transport = PublisherGrpcTransport(channel=grpc.insecure_channel(emulator_host))
    return PublisherClient(batch_settings=batching, transport=transport)
