"""The drain: each spooled message, pushed by Pub/Sub, republished to the broker as it was meant.

Deployed with `--trigger-topic SPOOL_TOPIC --retry`, the drain gets each message as a Pub/Sub
CloudEvent (Eventarc, binary mode); the local run's emulator pushes the same body without the
`ce-` headers. Either way:

- 200 once the broker confirmed the message (same Publisher: confirms, mandatory, persistent,
  same message_id, body and properties): Pub/Sub forgets it;
- 503 while it cannot be: Pub/Sub delivers it again, with back-off. An unroutable message (no
  queue bound for its key) is logged as an ERROR on every attempt until the topology has the
  queue, or the subscription's retention drops it;
- 200 with `refused`, logged as an ERROR and never published, for a message that never will be:
  not ours, or tampered with (shared.spool).
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shared.errors import (
    MethodNotAllowedError,
    RelayError,
    RequestError,
    SpooledMessageError,
    UnavailableError,
    UnroutableError,
)
from shared.logs import RequestRecord, set_trace, write_line
from shared.problems import internal_error_response, problem_response
from shared.publisher import Publisher
from shared.request_body import parse_json_object, read_body
from shared.spool import unspooled
from shared.trace import trace_of

log = logging.getLogger("event_relay.drain")

PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
MAX_PUSH_BYTES = 16 * 1024 * 1024  # a Pub/Sub message is at most 10 MB, base64 adds a third


class Drain:
    """Republishes one pushed message per request."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    async def handle(self, request: Request) -> Response:
        started = time.monotonic()
        set_trace(None)
        fields: RequestRecord = {"path": request.scope["path"]}
        try:
            if request.method != "POST":
                raise MethodNotAllowedError("Only POST is accepted.")
            body = await read_body(None, request.receive, MAX_PUSH_BYTES)
            data, attributes, fields["pubsub_message_id"] = _pushed(request, body)
            fields["event_id"] = attributes.get("message_id", "")
            fields["routing_key"] = attributes.get("routing_key", "")
            exchange, message = unspooled(data, attributes)
            set_trace(trace_of(message.properties.headers or {}))  # the alert's own trace
            if exchange != self._publisher.exchange:  # a setting to fix: keep it meanwhile
                raise SpooledMessageError(
                    f"spooled for exchange {exchange!r}, the drain publishes to "
                    f"{self._publisher.exchange!r} (AMQP_EXCHANGE)",
                    permanent=False,
                )
            await self._publisher.publish(message)
            response: Response = JSONResponse({"id": message.id, "delivery": "confirmed"})
        except SpooledMessageError as error:
            fields["problem"], fields["reason"] = "spooled-message", str(error)
            if error.permanent:  # answered 2xx: Pub/Sub must not deliver it again
                response = JSONResponse({"refused": str(error)})
            else:
                response = problem_response(UnavailableError(str(error), retry_after=60))
        except UnroutableError as error:
            fields["problem"] = error.slug
            fields["reason"] = f"{error}: declare the topology (nox -s topology)"
            response = problem_response(error)
        except RelayError as error:
            fields["problem"], fields["reason"] = error.slug, str(error)
            response = problem_response(error)
        except Exception:
            log.exception("unexpected error", extra=fields)
            response = internal_error_response()
        fields["status"] = response.status_code
        fields["latency_ms"] = round((time.monotonic() - started) * 1000, 2)
        relayed = response.status_code < 300 and "problem" not in fields
        # A refusal, or a message that cannot be routed, is an operator's to look at: ERROR.
        level = logging.INFO if relayed else _LEVELS.get(fields.get("problem", ""), logging.WARNING)
        message_text = "spooled message relayed" if relayed else "spooled message not relayed"
        write_line(log, level, message_text, fields)
        return response


_LEVELS = {"spooled-message": logging.ERROR, UnroutableError.slug: logging.ERROR}


def _pushed(request: Request, body: bytes) -> tuple[bytes, dict[str, str], str]:
    """Data, attributes and id of the Pub/Sub message in a push: a CloudEvent (binary or
    structured mode) or a plain push subscription's body."""
    document = parse_json_object(body)
    structured = "specversion" in document
    kind = document.get("type") if structured else request.headers.get("ce-type")
    if kind is not None and kind != PUBSUB_PUBLISHED:
        raise RequestError(f"not a Pub/Sub message: a CloudEvent of type {str(kind)[:100]!r}")
    payload: Any = document.get("data") if structured else document
    message = payload.get("message") if isinstance(payload, dict) else None
    if not isinstance(message, dict):
        raise RequestError("not a Pub/Sub push: no message")
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        raise SpooledMessageError("attributes are not strings", permanent=True)
    try:
        data = base64.b64decode(message.get("data") or "", validate=True)
    except (ValueError, TypeError):  # binascii.Error included; a non-ASCII string too
        raise SpooledMessageError("data is not base64", permanent=True) from None
    return data, attributes, str(message.get("messageId") or message.get("message_id") or "")
