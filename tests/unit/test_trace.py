"""shared.trace: the caller's trace context in, the function's span out."""

from __future__ import annotations

import pytest

from shared.trace import trace_of

TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def test_a_traceparent_names_the_trace_and_the_function_starts_its_own_span() -> None:
    trace = trace_of({"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "vendor=x"})

    assert trace is not None
    assert (trace.trace_id, trace.sampled, trace.tracestate) == (TRACE, True, "vendor=x")
    assert trace.span_id != PARENT
    assert trace.traceparent == f"00-{TRACE}-{trace.span_id}-01"
    assert trace.headers() == {"traceparent": trace.traceparent, "tracestate": "vendor=x"}
    assert trace_of({"traceparent": f"00-{TRACE}-{PARENT}-01"}).span_id != trace.span_id  # type: ignore[union-attr]


def test_cloud_runs_header_serves_when_there_is_no_traceparent() -> None:
    trace = trace_of({"x-cloud-trace-context": f"{TRACE.upper()}/12345;o=1"})

    assert trace is not None
    assert (trace.trace_id, trace.sampled) == (TRACE, True)
    assert trace.headers() == {"traceparent": f"00-{TRACE}-{trace.span_id}-01"}
    unsampled = trace_of({"x-cloud-trace-context": TRACE})
    assert unsampled is not None
    assert not unsampled.sampled


def test_a_traceparent_wins_over_cloud_runs_header() -> None:
    other = "0af7651916cd43dd8448eb211c80319c"
    trace = trace_of(
        {"traceparent": f"00-{TRACE}-{PARENT}-00", "x-cloud-trace-context": f"{other}/1;o=1"}
    )

    assert trace is not None
    assert (trace.trace_id, trace.sampled) == (TRACE, False)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"traceparent": f"01-{TRACE}-{PARENT}-01"},  # a version we do not know
        {"traceparent": f"00-{'0' * 32}-{PARENT}-01"},  # the all-zero trace id is invalid
        {"traceparent": f"00-{TRACE}-{'0' * 16}-01"},
        {"traceparent": f"00-{TRACE.upper()}-{PARENT}-01"},  # W3C: lower case only
        {"traceparent": f"00-{TRACE}-{PARENT}-01\r\nx: y"},
        {"x-cloud-trace-context": "not-a-trace/1;o=1"},
    ],
)
def test_malformed_contexts_are_ignored(headers: dict[str, str]) -> None:
    assert trace_of(headers) is None


def test_an_unusable_tracestate_is_dropped_not_passed_on() -> None:
    trace = trace_of({"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "x\x00y"})

    assert trace is not None
    assert trace.headers() == {"traceparent": trace.traceparent}
