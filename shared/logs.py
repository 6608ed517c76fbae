"""Structured JSON logs with the field names Cloud Logging reads (severity, message, trace).

Records carry identifiers and outcomes only: never a secret, a credential or a whole payload.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO, TypedDict

from pythonjsonlogger.json import JsonFormatter

from shared.trace import TraceContext

if TYPE_CHECKING:  # only a type: the adapters' import stays out of the logs' start
    from shared.adapters import Skip

LOGGER_NAME = "event_relay"
TRACE_FIELD = "logging.googleapis.com/trace"

SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"

# The current request's trace fields, as Cloud Logging names them.
trace_fields: ContextVar[dict[str, object] | None] = ContextVar("trace_fields", default=None)
_project: str | None = None  # GOOGLE_CLOUD_PROJECT: Cloud Logging wants the trace's project
_handler: logging.StreamHandler[TextIO] | None = None  # ours, once configure_logging ran


class RequestRecord(TypedDict, total=False):
    """The extra fields of the one line each request writes."""

    event_id: str  # the (first) message's id
    event_type: str
    routing_key: str
    status: int
    latency_ms: float
    path: str
    problem: str  # a refusal's problem type
    reason: str  # why: an error's detail, or why authentication failed
    sender: str  # a sender path's: its name, every message id, the alerts refused and skipped
    event_ids: list[str]
    refused: list[str]
    skipped: list[Skip]  # {"pointer": "/alerts/2", "reason": "resolved" | "test-notification"}
    delivery: str | dict[str, str]  # "confirmed" or "spooled"; on a sender path, per event id
    spooled_because: str  # the broker's problem when a message went to the spool
    pubsub_message_id: str  # the drain's: the spooled message's id on Pub/Sub


class _TraceFilter(logging.Filter):
    """Adds the trace and span of the current request, so its lines join the trace in Cloud
    Logging (and the orchestrator's, which the messages' traceparent names)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = trace_fields.get()
        if fields is not None:
            record.__dict__.update(fields)
        return True


def set_trace(trace: TraceContext | None) -> None:
    """Make `trace` the one the current request's lines carry."""
    if trace is None:
        trace_fields.set(None)
        return
    name = f"projects/{_project}/traces/{trace.trace_id}" if _project else trace.trace_id
    trace_fields.set({TRACE_FIELD: name, SPAN_FIELD: trace.span_id, SAMPLED_FIELD: trace.sampled})


def write_line(
    logger: logging.Logger, level: int, message: str, fields: Mapping[str, object]
) -> None:
    """One line, as our JSON formatter writes it (the same fields, order and encoding) but
    built without a LogRecord: a third of the cost, for the line every request writes.
    Before configure_logging (a test's own app), the logging module writes it."""
    if _handler is None:
        logger.log(level, message, extra=fields)
        return
    if not logger.isEnabledFor(level):
        return
    line: dict[str, object] = {
        "severity": logging.getLevelName(level),
        "logger": logger.name,
        "message": message,
    }
    line |= fields
    line |= trace_fields.get() or {}
    line["time"] = datetime.now(UTC).isoformat()
    text = _encode(line) + "\n"
    with _handler.lock:  # type: ignore[union-attr]  # a StreamHandler always has its lock
        _handler.stream.write(text)
        _handler.stream.flush()


_encode = json.JSONEncoder().encode  # python-json-logger's: ASCII, ", " and ": "


def configure_logging(level: str = "INFO", project: str | None = None) -> logging.Logger:
    """Send event-relay's records as JSON lines to stdout; idempotent. `project` qualifies
    the trace ids of the requests (GOOGLE_CLOUD_PROJECT)."""
    global _project, _handler
    _project = project
    # Fields no line of ours shows, which LogRecord would otherwise gather for every record
    # (the caller's frame walk, thread and process ids): the logging docs' optimisation switches.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logger = logging.getLogger(LOGGER_NAME)
    if not any(getattr(h, "_event_relay", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(
            JsonFormatter(
                "{levelname}{name}{message}",
                style="{",
                rename_fields={"levelname": "severity", "name": "logger"},
                timestamp="time",
            )
        )
        handler.addFilter(_TraceFilter())
        handler._event_relay = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
        _handler = handler
    logger.setLevel(level.upper())
    return logger
