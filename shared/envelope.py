"""The message on the broker: a CloudEvents 1.0 JSON envelope and its AMQP properties."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

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
    ce_type = cloud_event_type(event_type)
    properties = BasicProperties(
        content_type=CONTENT_TYPE,
        content_encoding="utf-8",
        delivery_mode=PERSISTENT,
        message_id=event_id,
        timestamp=int(received.timestamp()),
        type=ce_type,
        app_id=APP_ID,
        headers=trace.headers() if trace else None,
    )
    # The attributes in a fixed order, and `data` serialised by pydantic itself (in Rust): the
    # same JSON as model_dump(mode="json"), spliced in rather than dumped twice.
    head = (
        f'{{"specversion":"1.0","id":{_json(event_id)},'
        f'"source":{_json(f"/{APP_ID}/{event_type}")},"type":{_json(ce_type)},'
        f'"subject":{_json(event.hostname)},'
        f'"time":"{received.isoformat().replace("+00:00", "Z")}",'
        '"datacontenttype":"application/json",'
        + "".join(f"{_json(k)}:{_json(v)}," for k, v in (trace.headers() if trace else {}).items())
        + '"data":'
    )
    body = head.encode() + event.model_dump_json().encode() + b"}"
    return Message(routing_key=routing_key, body=body, properties=properties)


_json = json.JSONEncoder(ensure_ascii=False).encode
