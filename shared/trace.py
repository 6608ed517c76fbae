"""Trace context: the caller's trace, carried to the orchestrator so their logs join ours.

A request's W3C `traceparent` (or, failing that, Cloud Run's `X-Cloud-Trace-Context`) names the
trace and the caller's span. The function's work is a span of its own in that trace: its id is
in the request's log line (`logging.googleapis.com/spanId`), and the messages carry
`traceparent` with it as their parent, in the CloudEvent (the distributed-tracing extension)
and in the AMQP headers, with the caller's `tracestate` when there is one.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_CLOUD_TRACE = re.compile(r"([0-9a-fA-F]{32})(?:/([0-9]{1,20}))?(?:;o=([01]))?")
_NO_TRACE, _NO_SPAN = "0" * 32, "0" * 16
_TRACESTATE = re.compile(r"[\x20-\x7e]{1,512}")


@dataclass(frozen=True)
class TraceContext:
    """The trace a request belongs to, and the span of the function's work in it."""

    trace_id: str  # 32 lower-case hex digits
    span_id: str  # ours: 16 lower-case hex digits
    sampled: bool
    tracestate: str | None = None  # the caller's, passed on as it came

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def headers(self) -> dict[str, str]:
        """What a message carries: traceparent, and tracestate when the caller sent one."""
        found = {"traceparent": self.traceparent}
        if self.tracestate:
            found["tracestate"] = self.tracestate
        return found


def trace_of(headers: Mapping[str, str]) -> TraceContext | None:
    """The request's trace context (lower-case header names), or None when it has none or
    only malformed ones."""
    if match := _TRACEPARENT.fullmatch(headers.get("traceparent", "").strip()):
        trace_id, parent, flags = match.groups()
        if trace_id != _NO_TRACE and parent != _NO_SPAN:
            state = headers.get("tracestate", "").strip()
            return TraceContext(
                trace_id,
                secrets.token_hex(8),
                bool(int(flags, 16) & 1),
                state if _TRACESTATE.fullmatch(state) else None,
            )
    if match := _CLOUD_TRACE.fullmatch(headers.get("x-cloud-trace-context", "").strip()):
        trace_id, _parent, sampled = match.groups()
        if trace_id != _NO_TRACE:
            return TraceContext(trace_id.lower(), secrets.token_hex(8), sampled == "1")
    return None
