"""Sender payloads end to end: functions-framework serves each path, the TLS broker confirms."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.broker import BrokerNode
from deploy.function_process import FunctionProcess
from tests.e2e.conftest import Route, function_env

SENDERS = Path(__file__).parent.parent / "events" / "senders"


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SENDERS / f"{name}.json").read_text())
    return loaded


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url, json=body, timeout=30)


@pytest.fixture(scope="module")
def routes(make_route: Callable[[str], Route]) -> dict[str, Route]:
    return {
        "vm_isolate": make_route("vm.isolate"),
        "disk_space_low": make_route("disk.space-low"),
        "login_bruteforce": make_route("security.login-bruteforce"),
    }


@pytest.fixture(scope="module")
def servers(
    broker: BrokerNode, routes: dict[str, Route], start_function: Callable[..., FunctionProcess]
) -> dict[str, FunctionProcess]:
    return {
        name: start_function(name, function_env(broker, route.exchange))
        for name, route in routes.items()
    }


@pytest.fixture(autouse=True)
def empty_queues(routes: dict[str, Route]) -> None:
    for route in routes.values():
        route.messages()


def test_an_alertmanager_batch_lands_as_one_message_per_firing_alert(
    servers: dict[str, FunctionProcess], routes: dict[str, Route]
) -> None:
    response = post(servers["vm_isolate"].url + "alertmanager", sample("alertmanager"))

    assert response.status_code == 202
    answer = response.json()
    messages = routes["vm_isolate"].messages()
    assert [m.properties.message_id for m in messages] == answer["ids"]
    assert [m.body["id"] for m in messages] == answer["ids"]
    assert [m.body["data"]["hostname"] for m in messages] == [
        "web-01.prod.example.com",
        "db-07.prod.example.com",
    ]
    assert answer["skipped"] == ["/alerts/2"]


def test_a_retried_batch_repeats_its_message_ids(
    servers: dict[str, FunctionProcess], routes: dict[str, Route]
) -> None:
    url = servers["vm_isolate"].url + "alertmanager"
    first, again = post(url, sample("alertmanager")), post(url, sample("alertmanager"))

    ids = [m.properties.message_id for m in routes["vm_isolate"].messages()]
    assert ids == first.json()["ids"] + again.json()["ids"]
    assert ids[:2] == ids[2:]  # consumers deduplicate on message_id


@pytest.mark.parametrize(
    ("function", "path", "name", "field", "value"),
    [
        (
            "disk_space_low",
            "alertmanager",
            "alertmanager_disk_space_low",
            "mount_point",
            "/var/log",
        ),
        ("disk_space_low", "grafana", "grafana", "used_percent", 97.2),
        ("vm_isolate", "datadog", "datadog_template", "hostname", "web-01.prod.example.com"),
        ("vm_isolate", "cloud-monitoring", "cloud_monitoring", "reason", "c2-beaconing"),
        ("login_bruteforce", "splunk", "splunk", "failed_attempts", 57),
    ],
)
def test_each_sender_reaches_its_queue(
    servers: dict[str, FunctionProcess],
    routes: dict[str, Route],
    function: str,
    path: str,
    name: str,
    field: str,
    value: Any,
) -> None:
    response = post(servers[function].url + path, sample(name))

    assert response.status_code == 202, response.text
    [message] = routes[function].messages()
    assert message.properties.message_id == response.json()["ids"][0]
    assert message.body["data"][field] == value
    assert message.body["data"]["source"] == path


def test_datadog_default_payload_is_a_422_saying_where_a_host_was_looked_for(
    servers: dict[str, FunctionProcess], routes: dict[str, Route]
) -> None:
    response = post(servers["vm_isolate"].url + "datadog", sample("datadog_default"))

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["detail"].startswith("hostname: looked for hostname")
    assert routes["vm_isolate"].count() == 0


def test_an_unknown_sender_path_is_a_404(servers: dict[str, FunctionProcess]) -> None:
    response = post(servers["vm_isolate"].url + "nagios", sample("alertmanager"))

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_forwarded_resolved_alerts_need_a_bound_queue_or_the_batch_is_a_503(
    broker: BrokerNode,
    make_route: Callable[[str], Route],
    start_function: Callable[..., FunctionProcess],
) -> None:
    """Only vm.isolate is bound: the resolved alert is unroutable, so the sender must retry."""
    route = make_route("vm.isolate")
    env = function_env(broker, route.exchange, SENDER_FORWARD_RESOLVED="1")
    server = start_function("vm_isolate", env)

    response = post(server.url + "alertmanager", sample("alertmanager"))

    assert response.status_code == 503
    assert response.json()["type"] == "urn:event-relay:problem:unroutable"
    # The firing alerts were confirmed; the retry republishes them with the same ids.
    assert len(route.messages()) == 2
