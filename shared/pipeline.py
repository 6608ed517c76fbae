"""The HTTP pipeline every event function runs: check, authenticate, validate, publish, answer."""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shared.auth import Authenticator
from shared.envelope import build_message
from shared.errors import (
    AuthenticationError,
    MethodNotAllowedError,
    NotFoundError,
    RelayError,
    RequestError,
)
from shared.logs import RequestRecord, set_trace
from shared.problems import internal_error_response, problem_response
from shared.publisher import Publisher
from shared.request_body import (
    check_json_content_type,
    parse_json_object,
    read_body,
    validate_event,
)
from shared.schemas import Event

log = logging.getLogger("event_relay.request")

IDEMPOTENCY_HEADER = "idempotency-key"
_EVENT_ID = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII: safe as an AMQP message_id


@dataclass(frozen=True)
class EventType:
    """What a function relays: its name, its schema and the routing key of its queue."""

    name: str
    model: type[Event]
    routing_key: str


class Relay:
    """Turns one HTTP request into one confirmed message, or into a problem response."""

    def __init__(
        self,
        event_type: EventType,
        *,
        authenticator: Authenticator,
        publisher: Publisher,
        max_body_bytes: int,
    ) -> None:
        self.event_type = event_type
        self._authenticator = authenticator
        self._publisher = publisher
        self._max_body_bytes = max_body_bytes

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        set_trace(request.headers.get("x-cloud-trace-context"))
        record: RequestRecord = {"event_type": self.event_type.name, "path": request.url.path}
        try:
            response: Response = await self._relay(request, record)
        except RelayError as error:
            record["problem"] = error.slug
            # An auth failure logs its reason; the caller only learns that it failed.
            record["reason"] = (
                error.reason if isinstance(error, AuthenticationError) else str(error)
            )
            response = problem_response(error)
        except Exception:
            log.exception("unexpected error", extra=dict(record))
            response = internal_error_response()
        record["status"] = response.status_code
        record["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        level = logging.INFO if response.status_code < 500 else logging.ERROR
        outcome = "accepted" if response.status_code < 300 else "refused"
        log.log(level, "event %s", outcome, extra=dict(record))
        return response

    async def _relay(self, request: Request, record: RequestRecord) -> Response:
        if request.method != "POST":
            raise MethodNotAllowedError("Only POST is accepted.")
        if request.url.path != "/":
            raise NotFoundError(f"No event route at {request.url.path[:100]}.")
        body = await read_body(
            request.headers.get("content-length"), request.stream(), self._max_body_bytes
        )
        delivery_id = self._authenticator.verify(request.headers, request.query_params, body)
        check_json_content_type(request.headers.get("content-type"))
        parse_json_object(body)
        event = validate_event(self.event_type.model, body)
        event_id = delivery_id or _idempotency_key(request) or str(uuid.uuid4())
        record["event_id"] = event_id
        record["routing_key"] = self.event_type.routing_key
        message = build_message(
            event,
            event_type=self.event_type.name,
            event_id=event_id,
            routing_key=self.event_type.routing_key,
        )
        await self._publisher.publish(message)
        return JSONResponse({"id": event_id, "routing_key": message.routing_key}, status_code=202)


def _idempotency_key(request: Request) -> str | None:
    """The caller's Idempotency-Key: a retry with the same key gets the same message_id."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and not _EVENT_ID.match(key):
        raise RequestError("Idempotency-Key must be 1 to 200 printable ASCII characters.")
    return key
