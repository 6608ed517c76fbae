"""Every event type end to end: functions-framework serves it, its own queue gets the message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from deploy.broker import BrokerNode
from deploy.function_process import FunctionProcess
from deploy.manifest import Function, load_manifest
from tests.e2e.conftest import Route, function_env, sample_event

FUNCTIONS = {fn.name: fn for fn in load_manifest()}


@pytest.fixture(scope="module")
def served(
    broker: BrokerNode,
    make_route: Callable[[str], Route],
    start_function: Callable[..., FunctionProcess],
) -> Callable[[Function], tuple[FunctionProcess, Route]]:
    """Start each function once, on an exchange of its own with its routing key's queue."""
    started: dict[str, tuple[FunctionProcess, Route]] = {}

    def serve(fn: Function) -> tuple[FunctionProcess, Route]:
        if fn.name not in started:
            route = make_route(fn.routing_key)
            server = start_function(fn.name, function_env(broker, route.exchange))
            started[fn.name] = (server, route)
        server, route = started[fn.name]
        route.messages()  # empty it
        return server, route

    return serve


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url, json=body, timeout=30)


@pytest.mark.parametrize("fn", FUNCTIONS.values(), ids=FUNCTIONS.keys())
def test_the_sample_event_reaches_its_own_queue(
    fn: Function, served: Callable[[Function], tuple[FunctionProcess, Route]]
) -> None:
    server, route = served(fn)
    event = sample_event(fn.name)

    response = post(server.url, event)

    assert response.status_code == 202, response.text
    assert response.json()["routing_key"] == fn.routing_key
    [message] = route.messages()
    assert message.routing_key == fn.routing_key
    assert message.properties.type == f"event-relay.{fn.name}"
    data = message.body["data"]
    assert {k: data[k] for k in event if k not in ("hostname", "detected_at")} == {
        k: v for k, v in event.items() if k not in ("hostname", "detected_at")
    }


VALID = [
    ("disk_space_low", {"mount_point": "C:"}),
    ("disk_space_low", {"mount_point": "D:\\data\\logs", "used_percent": 100, "free_bytes": 0}),
    ("service_down", {"service_name": "getty@tty1.service"}),
    ("service_down", {"service_name": "MSSQL$SQLEXPRESS", "platform": "windows"}),
    ("login_bruteforce", {"source_ip": "2001:db8::7"}),
]
INVALID = [
    ("disk_space_low", {"mount_point": "var/lib"}, "/mount_point"),
    ("disk_space_low", {"used_percent": 100.5}, "/used_percent"),
    ("disk_space_low", {"used_percent": "93"}, "/used_percent"),
    ("disk_space_low", {"free_bytes": -1}, "/free_bytes"),
    ("service_down", {"service_name": "../etc/passwd"}, "/service_name"),
    ("service_down", {"platform": "macos"}, "/platform"),
    ("login_bruteforce", {"source_ip": "10.0.0.300"}, "/source_ip"),
    ("login_bruteforce", {"username": "root\u0000"}, "/username"),
    ("login_bruteforce", {"failed_attempts": 0}, "/failed_attempts"),
    ("login_bruteforce", {"window_seconds": 0}, "/window_seconds"),
]


@pytest.mark.parametrize(("name", "change"), VALID)
def test_other_valid_forms_are_accepted(
    name: str, change: dict[str, Any], served: Callable[[Function], tuple[FunctionProcess, Route]]
) -> None:
    server, route = served(FUNCTIONS[name])

    response = post(server.url, {**sample_event(name), **change})

    assert response.status_code == 202, response.text
    assert len(route.messages()) == 1


@pytest.mark.parametrize(("name", "change", "pointer"), INVALID)
def test_an_invalid_field_is_a_422_that_names_it_and_nothing_is_published(
    name: str,
    change: dict[str, Any],
    pointer: str,
    served: Callable[[Function], tuple[FunctionProcess, Route]],
) -> None:
    server, route = served(FUNCTIONS[name])

    response = post(server.url, {**sample_event(name), **change})

    assert response.status_code == 422
    assert [e["pointer"] for e in response.json()["errors"]] == [pointer]
    assert route.count() == 0
