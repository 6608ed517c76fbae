"""The HTTP pipeline every event function runs: check, authenticate, validate, publish, answer.

`POST /` takes the canonical schema; `POST /<sender>` a sender's own payload, adapted by
`shared.adapters` into one event per alert, each validated by the same model. Each request
writes one log line, built from what the request became (`Accepted`) and how it ended.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from shared.auth import Authenticator
from shared.delivery import Deliverer, Outcome
from shared.envelope import Message, build_message, new_event_id
from shared.errors import (
    AuthenticationError,
    MethodNotAllowedError,
    RelayError,
    RequestError,
    ValidationFailedError,
)
from shared.logs import RequestRecord, set_trace, write_line
from shared.problems import internal_error_response, problem_response
from shared.request_body import (
    check_json_content_type,
    parse_json_object,
    read_body,
    validate_event,
)
from shared.routes import Routes
from shared.schemas import Event
from shared.trace import TraceContext, trace_of
from shared.vocabulary import IDEMPOTENCY_KEY_PATTERN

if TYPE_CHECKING:  # only types: the adapters load with a sender path's first request
    from shared.adapters import Adapter, Refusal

log = logging.getLogger("event_relay.request")

IDEMPOTENCY_HEADER = "idempotency-key"
_NO_QUERY: dict[str, str] = {}
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
# JSONResponse's own encoding, with one encoder: json.dumps with options makes one per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(frozen=True)
class Accepted:
    """What a valid request became: the messages to deliver and the answer once they are."""

    messages: list[Message]
    answer: dict[str, Any]
    log_fields: RequestRecord

    def delivered(self, outcomes: list[Outcome]) -> tuple[dict[str, Any], RequestRecord]:
        """The answer and log fields once delivered, saying how each message is held: one word
        for the canonical path's one message, a word per id on a sender path."""
        held: Any = {m.id: o.delivered for m, o in zip(self.messages, outcomes, strict=True)}
        if "id" in self.answer:
            [held] = held.values()
        fields = self.log_fields.copy()
        fields["delivery"] = held
        spooled = [o.broker_problem for o in outcomes if o.broker_problem]
        if spooled:
            fields["spooled_because"] = spooled[0]
        return {**self.answer, "delivery": held}, fields


class Relay:
    """Turns one HTTP request into confirmed messages, or into a problem response."""

    def __init__(
        self,
        model: type[Event],
        *,
        authenticator: Authenticator,
        deliverer: Deliverer,
        max_body_bytes: int,
        routes: Routes,
    ) -> None:
        self.model = model
        self._authenticator = authenticator
        self._deliverer = deliverer
        self._max_body_bytes = max_body_bytes
        self._routes = routes

    async def handle(self, request: Request) -> Response:
        started = time.monotonic()
        headers = _header_fields(request.scope["headers"])
        trace = trace_of(headers)
        set_trace(trace)
        # The raw ASGI path: request.url would build a whole URL object for every request.
        path: str = request.scope["path"]
        fields: RequestRecord = {"event_type": self.model.event_type, "path": path}
        accepted_fields: RequestRecord = {}
        try:
            if request.method != "POST":
                raise MethodNotAllowedError("Only POST is accepted.")
            adapter = self._routes.adapter_for(path)
            if adapter is not None:
                fields["sender"] = adapter.sender.name
            accepted = await self._accept(request, headers, adapter, trace)
            accepted_fields = accepted.log_fields
            outcomes = await self._deliverer.deliver(accepted.messages, started)
            answer, accepted_fields = accepted.delivered(outcomes)
            response: Response = Response(_encode(answer), 202, media_type="application/json")
        except RelayError as error:
            fields["problem"] = error.slug
            # An auth failure logs its reason; the caller only learns that it failed.
            fields["reason"] = (
                error.reason if isinstance(error, AuthenticationError) else str(error)
            )
            response = problem_response(error)
        except Exception:
            log.exception("unexpected error", extra=fields)
            response = internal_error_response()
        fields.update(accepted_fields)
        fields["status"] = response.status_code
        fields["latency_ms"] = round((time.monotonic() - started) * 1000, 2)
        level = logging.INFO if response.status_code < 500 else logging.ERROR
        outcome = "accepted" if response.status_code < 300 else "refused"
        write_line(log, level, f"event {outcome}", fields)
        return response

    async def _accept(
        self,
        request: Request,
        headers: dict[str, str],
        adapter: Adapter | None,
        trace: TraceContext | None,
    ) -> Accepted:
        """Read, authenticate, parse and validate: Accepted, or the RequestError why not."""
        body = await read_body(headers.get("content-length"), request.receive, self._max_body_bytes)
        # Parsing the query costs every request; only a query-token caller sends one.
        query = request.query_params if request.scope["query_string"] else _NO_QUERY
        delivery_id = await self._authenticator.verify(headers, query, body)
        check_json_content_type(headers.get("content-type"))
        document = parse_json_object(body)
        if adapter is not None:
            return self._adapt(adapter, document, trace)
        event = validate_event(self.model, body)
        event_id = delivery_id or _idempotency_key(headers) or new_event_id()
        routing_key = self.model.routing_key
        message = build_message(
            event,
            event_type=self.model.event_type,
            event_id=event_id,
            routing_key=routing_key,
            trace=trace,
        )
        answer = {"id": event_id, "routing_key": routing_key}
        return Accepted([message], answer, {"event_id": event_id, "routing_key": routing_key})

    def _adapt(
        self, adapter: Adapter, document: dict[str, Any], trace: TraceContext | None
    ) -> Accepted:
        """One message per alert; a 422 only when no alert is valid."""
        candidates, skipped = adapter.candidates(document)
        messages: list[Message] = []
        refused: list[Refusal] = []
        for candidate in candidates:
            outcome = adapter.validate(candidate)
            if not isinstance(outcome, Event):  # a Refusal: why the alert is not valid
                refused.append(outcome)
                continue
            suffix = candidate.suffix  # "", ".resolved" or ".test": never read as a new order
            messages.append(
                build_message(
                    outcome,
                    event_type=self.model.event_type + suffix,
                    event_id=candidate.event_id,
                    routing_key=self.model.routing_key + suffix,
                    trace=trace,
                )
            )
        if refused and not messages:
            raise ValidationFailedError(
                f"No alert matches the {self.model.__name__} schema.",
                errors=[error for refusal in refused for error in refusal.errors],
            )
        ids = [m.id for m in messages]
        answer = {
            "ids": ids,
            "routing_key": self.model.routing_key,
            "refused": [{"pointer": r.pointer, "errors": r.errors} for r in refused],
            "skipped": skipped,
        }
        log_fields: RequestRecord = {
            "routing_key": self.model.routing_key,
            "event_ids": ids,
            "refused": [r.pointer for r in refused],
            "skipped": skipped,
        }
        if ids:
            log_fields["event_id"] = ids[0]
        return Accepted(messages, answer, log_fields)


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
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise RequestError("Idempotency-Key must be 1 to 200 printable ASCII characters.")
    return key
