"""What the baselines share: the alert model a user would write, the envelope, the broker settings.

The baselines are the designs event-relay is measured against; none of this is product code.
They read the same environment as the function (AMQP_URL, AMQP_CA_CERT_FILE,
AMQP_CLIENT_CERT_FILE, AMQP_CLIENT_KEY_FILE) plus BENCH_TOKEN, the bearer token they expect.
"""

from __future__ import annotations

import hmac
import json
import os
import ssl
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import pika
from pydantic import AwareDatetime, BaseModel, Field, IPvAnyAddress

EXCHANGE = "event-relay"
ROUTING_KEY = "vm.isolate"
EVENT_TYPE = "event-relay.vm_isolate"
PERSISTENT = 2


class VmIsolateAlert(BaseModel):
    """The alert as a user would model it: the same fields and limits as event-relay's schema."""

    hostname: str = Field(min_length=1, max_length=253)
    severity: Literal["info", "warning", "critical"] = "warning"
    source: str = Field(min_length=1, max_length=128)
    detected_at: AwareDatetime
    summary: str = Field("", max_length=1000)
    details: dict[str, Any] | None = None
    reason: str = Field(min_length=1, max_length=1000)
    vm_id: str | None = Field(None, pattern=r"^vm-\d{1,12}$")
    ip_address: IPvAnyAddress | None = None


def envelope(alert: VmIsolateAlert, event_id: str) -> bytes:
    """The same CloudEvents JSON envelope event-relay publishes."""
    received = datetime.now(UTC)
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "/event-relay/vm_isolate",
            "type": EVENT_TYPE,
            "subject": alert.hostname,
            "time": received.isoformat().replace("+00:00", "Z"),
            "datacontenttype": "application/json",
            "data": alert.model_dump(mode="json"),
        },
        separators=(",", ":"),
    ).encode()


def pika_properties(event_id: str) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type="application/cloudevents+json",
        delivery_mode=PERSISTENT,
        message_id=event_id,
        type=EVENT_TYPE,
        app_id="bench-baseline",
    )


def authorized(header: str | None) -> bool:
    """The bearer check: `Authorization: Bearer $BENCH_TOKEN`, compared in constant time."""
    expected = f"Bearer {os.environ['BENCH_TOKEN']}".encode()
    return hmac.compare_digest((header or "").encode(), expected)


def amqp_url() -> str:
    return os.environ["AMQP_URL"]


def tls_context() -> ssl.SSLContext:
    """Mutual TLS from the *_FILE settings the function uses, host name verified."""
    context = ssl.create_default_context(cafile=os.environ["AMQP_CA_CERT_FILE"])
    context.load_cert_chain(os.environ["AMQP_CLIENT_CERT_FILE"], os.environ["AMQP_CLIENT_KEY_FILE"])
    return context


def pika_parameters() -> pika.ConnectionParameters:
    """BlockingConnection parameters for the broker of AMQP_URL over mutual TLS."""
    url = urlsplit(amqp_url())
    host = url.hostname or "localhost"
    return pika.ConnectionParameters(
        host=host,
        port=url.port or 5671,
        virtual_host=unquote(url.path[1:] or "/"),
        credentials=pika.PlainCredentials(unquote(url.username or ""), unquote(url.password or "")),
        ssl_options=pika.SSLOptions(tls_context(), server_hostname=host),
        connection_attempts=1,
        socket_timeout=5,
        blocked_connection_timeout=5,
    )
