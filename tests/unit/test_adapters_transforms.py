"""The mapping language's paths and transforms."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from shared.adapters import Refusal
from shared.adapters.mapping import Alternative, evaluate, parse_expression, parse_path
from shared.adapters.transforms import transform
from shared.config import Settings
from shared.routes import routes_for
from shared.schemas import VmIsolate

SENDERS = Path(__file__).parent.parent / "events" / "senders"

DOCUMENT = {
    "alerts": [{"labels": {"instance": "a:1"}}, {"labels": {"instance": "b:2", "x.y": "dotted"}}],
    "tags": ["env:prod", "host:web-01"],
    "empty": "",
    "nothing": None,
}


def value(spec: Any, document: Any = DOCUMENT, current: int | None = None) -> Any:
    return evaluate(
        parse_expression(spec, where="test"), document, current, {"crit": "critical"}
    ).value


@pytest.mark.parametrize(
    ("spec", "current", "expected"),
    [
        ("alerts[].labels.instance", 1, "b:2"),
        ("alerts[0].labels.instance", 1, "a:1"),
        ('alerts[1].labels."x.y"', None, "dotted"),
        ("alerts[5].labels.instance", None, None),
        ("alerts.labels", None, None),
        (["empty", "nothing", "=fallback"], None, "fallback"),
        ("tags | tag(host)", None, "web-01"),
        ("tags | tag(role)", None, None),
        ("tags | first", None, "env:prod"),
        ("=crit | severity", None, "critical"),
        ("=bogus | severity", None, None),
        ({"a": "tags | tag(host)", "b": "nothing"}, None, {"a": "web-01"}),
        ({"b": "nothing"}, None, None),
    ],
)
def test_paths_alternatives_and_objects(spec: Any, current: int | None, expected: Any) -> None:
    assert value(spec, current=current) == expected


@pytest.mark.parametrize(
    ("transform", "given", "expected"),
    [
        ("strip_port", "web-01:9100", "web-01"),
        ("strip_port", "10.0.0.5:9100", "10.0.0.5"),
        ("strip_port", "[fe80::1]:9100", "fe80::1"),
        ("strip_port", "fe80::1", "fe80::1"),
        ("strip_port", "https://web-01.example.com:8443/health", "web-01.example.com"),
        ("strip_port", "web-01", "web-01"),
        ("strip_port", "http://[::1", "http://[::1"),  # malformed: left for the schema to refuse
        ("strip_port", "http://[abc]:80", "http://[abc]:80"),
        ("int", "95", 95),
        ("int", "95.0", 95),
        ("int", "95.5", "95.5"),  # left for the schema to refuse
        ("int", "NaN", "NaN"),
        ("float", "93.5", 93.5),
        ("float", "93.5%", 93.5),
        ("float", "1e999", "1e999"),
        ("text", 42, "42"),
        ("lower", "WEB", "web"),
        ("last_word", "project web-01", "web-01"),
        ("first", "a, b", "a"),
        ("first", ["x", "y"], "x"),
        ("clean", " a\r\nb\x07 ", "a\nb"),
        ("truncate(3)", "abcdef", "abc"),
        ("time", "2026-11-25T07:30:00.123456789Z", "2026-11-25T07:30:00.123456Z"),
        ("time", "2026-11-25T08:30:00.000+01:00", "2026-11-25T08:30:00.000+01:00"),
        ("time", "0001-01-01T00:00:00Z", None),
        ("time", 0, None),  # Unix time 0: not set
        ("time", "0", None),
        ("time", 1795591800, "2026-11-25T07:30:00Z"),
        ("time", "1795591800000", "2026-11-25T07:30:00Z"),
        ("time", "yesterday", "yesterday"),
        ("time", "99999999999999999999", "99999999999999999999"),  # beyond time_t: OSError
        ("time", 99999999999999999999, 99999999999999999999),
        ("time", 10**400, 10**400),  # too large for a float
    ],
)
def test_transforms(transform: str, given: Any, expected: Any) -> None:
    assert value(f"v | {transform}", {"v": given}) == expected


@pytest.mark.parametrize("error", [ValueError, OverflowError, OSError])
def test_a_failing_transform_leaves_the_value_as_it_was(error: type[Exception]) -> None:
    def boom(value: Any, _: Mapping[str, str]) -> Any:
        raise error("hostile")

    upper = transform("upper", where="test")
    alternative = Alternative(parse_path("v", where="test"), None, (boom, upper), ("boom", "upper"))

    found = evaluate((alternative,), {"v": "web-01"}, None, {})

    assert (found.value, found.source) == ("web-01", alternative)  # and nothing after it ran


@pytest.mark.parametrize(
    ("field", "given", "pointer"),
    [
        ("instance", "http://[::1", "/alerts/0/labels/instance"),
        ("instance", "http://[abc]:80", "/alerts/0/labels/instance"),
        ("startsAt", "99999999999999999999", "/alerts/0/startsAt"),
        ("startsAt", 99999999999999999999, "/alerts/0/startsAt"),
    ],
)
def test_hostile_sender_values_are_refused_not_raised(field: str, given: Any, pointer: str) -> None:
    document = json.loads((SENDERS / "alertmanager.json").read_text())
    alert = document["alerts"][0]
    (alert["labels"] if field == "instance" else alert)[field] = given
    adapter = routes_for(VmIsolate, Settings.from_env({})).adapter_for("/alertmanager")
    assert adapter is not None

    candidates, _ = adapter.candidates(document)
    refusal = adapter.validate(candidates[0])

    assert isinstance(refusal, Refusal)
    [error] = refusal.errors
    assert error["pointer"] == pointer
