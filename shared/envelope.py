"""The message on the broker: a CloudEvents 1.0 JSON envelope and its AMQP properties."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from pika import BasicProperties

from shared.schemas import Event
from shared.trace import TraceContext

APP_ID = "event-relay"
CONTENT_TYPE = "application/cloudevents+json"
PERSISTENT = 2


@dataclass(frozen=True)
class Message:
    """What the publisher sends: the routing key, the body and its properties."""

    routing_key: str
    body: bytes
    properties: BasicProperties

    @property
    def id(self) -> str:
        return str(self.properties.message_id)


def new_event_id() -> str:
    """A random UUID (version 4) as str(uuid.uuid4()) writes it, at half the cost: uuid.UUID
    checks and converts its input in Python, for an id made and sent once."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    digits = raw.hex()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def cloud_event_type(event_type: str) -> str:
    return f"{APP_ID}.{event_type}"


def build_message(
    event: Event,
    *,
    event_type: str,
    event_id: str,
    routing_key: str,
    trace: TraceContext | None = None,
) -> Message:
    """Wrap a validated event in its envelope; `time` is when event-relay received it, and a
    trace context travels as the CloudEvent's and the AMQP message's traceparent."""
    received = datetime.now(UTC)
    ce_type, attributes = _attributes_of(event_type)
    trace_headers = trace.headers() if trace else None
    properties = BasicProperties(
        content_type=CONTENT_TYPE,
        content_encoding="utf-8",
        delivery_mode=PERSISTENT,
        message_id=event_id,
        timestamp=int(received.timestamp()),
        type=ce_type,
        app_id=APP_ID,
        headers=trace_headers,
    )
    # The attributes in a fixed order, and `data` serialised by pydantic itself (in Rust): the
    # same JSON as model_dump(mode="json"), spliced in rather than dumped twice.
    head = (
        f'{{"specversion":"1.0","id":{_json(event_id)},{attributes}'
        f'"subject":{_json(event.hostname)},'
        f'"time":"{received.isoformat().replace("+00:00", "Z")}",'
        '"datacontenttype":"application/json",'
    )
    if trace_headers:
        head += "".join(f"{_json(k)}:{_json(v)}," for k, v in trace_headers.items())
    # model_dump_json's own bytes, before it decodes them into a str.
    data = event.__pydantic_serializer__.to_json(event)
    body = b"".join((head.encode(), b'"data":', data, b"}"))
    return Message(routing_key=routing_key, body=body, properties=properties)


@lru_cache(maxsize=64)
def _attributes_of(event_type: str) -> tuple[str, str]:
    """An event type's CloudEvent type, and its attributes as the envelope writes them."""
    ce_type = cloud_event_type(event_type)
    return ce_type, f'"source":{_json(f"/{APP_ID}/{event_type}")},"type":{_json(ce_type)},'


_json = json.JSONEncoder(ensure_ascii=False).encode
