"""The HTTP pipeline every event function runs: check, authenticate, validate, publish, answer.

`POST /` takes the canonical schema; `POST /<sender>` a sender's own payload, adapted by
`shared.adapters` into one event per alert, each validated by the same model.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shared.adapters import Adapter, Refusal, Routes, routes_from_env
from shared.auth import Authenticator
from shared.envelope import Message, build_message
from shared.errors import (
    AuthenticationError,
    MethodNotAllowedError,
    RelayError,
    RequestError,
    ValidationFailedError,
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
RESOLVED = "resolved"  # suffix of the routing key and event type of a forwarded resolved alert
_NO_QUERY: dict[str, str] = {}
_EVENT_ID = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII: safe as an AMQP message_id


@dataclass(frozen=True)
class EventType:
    """What a function relays: its name, its schema and the routing key of its queue."""

    name: str
    model: type[Event]
    routing_key: str


class Relay:
    """Turns one HTTP request into confirmed messages, or into a problem response."""

    def __init__(
        self,
        event_type: EventType,
        *,
        authenticator: Authenticator,
        publisher: Publisher,
        max_body_bytes: int,
        routes: Routes | None = None,
    ) -> None:
        self.event_type = event_type
        self._authenticator = authenticator
        self._publisher = publisher
        self._max_body_bytes = max_body_bytes
        self._routes = routes or routes_from_env(event_type.name, event_type.model)

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        headers = _header_fields(request.scope["headers"])
        set_trace(headers.get("x-cloud-trace-context"))
        # The raw ASGI path: request.url would build a whole URL object for every request.
        record: RequestRecord = {"event_type": self.event_type.name, "path": request.scope["path"]}
        batch: dict[str, Any] = {}  # a sender path's extra fields: sender, event_ids, refused...
        try:
            response: Response = await self._relay(request, headers, record, batch)
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
        log.log(level, "event %s", outcome, extra={**record, **batch})
        return response

    async def _relay(
        self,
        request: Request,
        headers: dict[str, str],
        record: RequestRecord,
        batch: dict[str, Any],
    ) -> Response:
        if request.method != "POST":
            raise MethodNotAllowedError("Only POST is accepted.")
        adapter = self._routes.adapter_for(record["path"])
        body = await read_body(
            headers.get("content-length"), request.stream(), self._max_body_bytes
        )
        # Parsing the query costs every request; only a query-token caller sends one.
        query = request.query_params if request.scope["query_string"] else _NO_QUERY
        delivery_id = self._authenticator.verify(headers, query, body)
        check_json_content_type(headers.get("content-type"))
        document = parse_json_object(body)
        if adapter is not None:
            return await self._relay_sender(adapter, document, record, batch)
        event = validate_event(self.event_type.model, body)
        event_id = delivery_id or _idempotency_key(headers) or str(uuid.uuid4())
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

    async def _relay_sender(
        self,
        adapter: Adapter,
        document: dict[str, Any],
        record: RequestRecord,
        batch: dict[str, Any],
    ) -> Response:
        """One message per alert; 202 once all are confirmed, listing the alerts refused."""
        batch["sender"] = adapter.sender.name
        candidates, skipped = adapter.candidates(document)
        messages: list[Message] = []
        refused: list[Refusal] = []
        for candidate in candidates:
            outcome = adapter.validate(candidate)
            if isinstance(outcome, Refusal):
                refused.append(outcome)
                continue
            suffix = f".{RESOLVED}" if candidate.resolved else ""
            messages.append(
                build_message(
                    outcome,
                    event_type=self.event_type.name + suffix,
                    event_id=candidate.event_id,
                    routing_key=self.event_type.routing_key + suffix,
                )
            )
        ids = [m.id for m in messages]
        batch.update(event_ids=ids, refused=[r.pointer for r in refused], skipped=skipped)
        record["routing_key"] = self.event_type.routing_key
        if ids:
            record["event_id"] = ids[0]
        if refused and not messages:
            raise ValidationFailedError(
                f"No alert matches the {self.event_type.model.__name__} schema.",
                errors=[error for refusal in refused for error in refusal.errors],
            )
        await _publish_all(self._publisher, messages)
        answer = {
            "ids": ids,
            "routing_key": self.event_type.routing_key,
            "refused": [{"pointer": r.pointer, "errors": r.errors} for r in refused],
            "skipped": skipped,
        }
        return JSONResponse(answer, status_code=202)


async def _publish_all(publisher: Publisher, messages: list[Message]) -> None:
    """Publish concurrently and wait for every confirm; the first failure is raised."""
    results = await asyncio.gather(
        *(publisher.publish(m) for m in messages), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _header_fields(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request's headers by name, the first of repeated ones, decoded once: ASGI servers
    give names in lower case, and each lookup in Starlette's Headers scans them all."""
    fields: dict[str, str] = {}
    for name, value in raw:
        fields.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return fields


def _idempotency_key(headers: dict[str, str]) -> str | None:
    """The caller's Idempotency-Key: a retry with the same key gets the same message_id."""
    key = headers.get(IDEMPOTENCY_HEADER)
    if key is not None and not _EVENT_ID.match(key):
        raise RequestError("Idempotency-Key must be 1 to 200 printable ASCII characters.")
    return key
