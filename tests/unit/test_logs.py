"""shared.logs: the request line written directly is the line the JSON formatter writes."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from shared import logs
from shared.trace import trace_of

FIELDS = {
    "event_type": "vm_isolate",
    "path": "/alertmanager",
    "sender": "alertmanager",
    "event_ids": ["a", "b"],
    "skipped": [{"pointer": "/alerts/2", "reason": "resolved"}],
    "delivery": {"a": "confirmed", "b": "spooled"},
    "summary": 'hôte: \u2028 "quoted"',
    "status": 202,
    "latency_ms": 1.25,
}


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Logging configured as a function configures it, into a buffer; undone afterwards, so
    other tests see the logging module's records (caplog) as before."""
    root = logging.getLogger(logs.LOGGER_NAME)
    logs.configure_logging("INFO", project="relay-logs")
    assert logs._handler is not None
    captured = io.StringIO()
    logs._handler.stream = captured
    yield captured
    root.removeHandler(logs._handler)
    root.propagate, logs._handler = True, None
    logs.set_trace(None)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("traced", [False, True])
def test_the_direct_line_is_the_formatters_line(stream: io.StringIO, traced: bool) -> None:
    logs.set_trace(trace_of({"traceparent": f"00-{'a1' * 16}-{'b2' * 8}-01"}) if traced else None)
    logger = logging.getLogger("event_relay.request")

    logger.info("event accepted", extra=FIELDS)
    logs.write_line(logger, logging.INFO, "event accepted", FIELDS)

    formatted, direct = lines(stream)
    as_formatted, as_direct = json.loads(formatted), json.loads(direct)
    assert as_formatted.pop("time")[:16] == as_direct.pop("time")[:16]  # to the minute
    assert list(as_direct.items()) == list(as_formatted.items())  # same fields, same order
    assert formatted.split('"time"')[0] == direct.split('"time"')[0]  # same encoding
    assert ("logging.googleapis.com/trace" in as_direct) is traced


def test_a_level_below_the_loggers_writes_nothing(stream: io.StringIO) -> None:
    logs.write_line(logging.getLogger("event_relay.request"), logging.DEBUG, "detail", {})

    assert lines(stream) == []
