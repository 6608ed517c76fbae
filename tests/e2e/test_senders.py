"""Sender payloads end to end: functions-framework serves each path, the TLS broker confirms."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.broker import BrokerNode
from deploy.function_process import FunctionProcess
from tests.e2e.conftest import Route, free_port, function_env
from tests.e2e.test_alertmanager import BINARY, Alertmanager, alert, request_lines
from tests.unit.test_adapters_senders import DELETE
from tests.unit.test_adapters_senders import sample as changed

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
    assert answer["skipped"] == [{"pointer": "/alerts/2", "reason": "resolved"}]


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


# Each sender's real shape (tests/events/senders/SOURCES.md credits each: the senders' docs,
# grafana/alerting's source, cloudforet-io's captured Cloud Monitoring incident...), its host
# taken out of every place, then put back in one place at a time: every place the docs list.
HOST = "web-01.prod.example.com"
BARE = {
    "alertmanager": ("alertmanager", {"alerts.0.labels.instance": DELETE}),
    "grafana": ("grafana", {"alerts.0.labels.instance": DELETE}),
    "datadog": ("datadog_template", {"hostname": DELETE, "scope": DELETE, "tags": DELETE}),
    "cloud-monitoring": (
        "cloud_monitoring_vm_labels",
        {"incident.metric.labels.instance_name": DELETE, "incident.resource.labels": {}},
    ),
    "splunk": ("splunk", {"result.host": DELETE, "result.src": DELETE}),
}
PLACES = [
    *(
        (sender, f"alerts.0.{kind}.{name}", value, HOST)
        for sender in ("alertmanager", "grafana")
        for kind in ("labels", "annotations")
        for name, value in (
            ("hostname", HOST),
            ("host", f"{HOST}:22"),
            ("nodename", HOST),
            ("instance", f"{HOST}:9100"),
        )
    ),
    ("datadog", "hostname", HOST, HOST),
    ("datadog", "host_name", HOST, HOST),
    ("datadog", "host", HOST, HOST),
    ("datadog", "alert_scope", f"host:{HOST},device:/dev/sda1", HOST),
    ("datadog", "scope", f"env:prod, host:{HOST}", HOST),
    ("datadog", "tags", f"env:prod,host:{HOST},role:web", HOST),
    ("cloud-monitoring", "incident.resource_display_name", "web-01", "web-01"),
    ("cloud-monitoring", "incident.metric.labels.instance_name", "web-01", "web-01"),
    ("cloud-monitoring", "incident.resource.labels.instance_name", "web-01", "web-01"),
    ("cloud-monitoring", "incident.metric.labels.host", HOST, HOST),
    ("cloud-monitoring", "incident.resource.labels.host", HOST, HOST),
    ("cloud-monitoring", "incident.resource_name", "prod-project web-01", "web-01"),
    (
        "cloud-monitoring",
        "incident.resource.labels.instance_id",
        "11223344556677",
        "11223344556677",
    ),
    ("splunk", "result.hostname", HOST, HOST),
    ("splunk", "result.host", [HOST, "web-02.prod.example.com"], HOST),  # multivalue: the first
    ("splunk", "result.dest", HOST, HOST),
    ("splunk", "result.src", "10.20.30.41", "10.20.30.41"),
]


@pytest.mark.parametrize(("sender", "place", "value", "expected"), PLACES)
def test_a_host_in_any_place_a_sender_puts_it_reaches_the_queue(
    servers: dict[str, FunctionProcess],
    routes: dict[str, Route],
    sender: str,
    place: str,
    value: Any,
    expected: str,
) -> None:
    name, bare = BARE[sender]
    payload = changed(name, **{**bare, place: value})

    response = post(servers["vm_isolate"].url + sender, payload)

    assert response.status_code == 202, response.text
    [message] = routes["vm_isolate"].messages()
    assert message.body["data"]["hostname"] == expected
    assert message.properties.message_id == response.json()["ids"][0]


@pytest.mark.parametrize("sender", list(BARE))
def test_a_sender_payload_with_no_usable_host_is_a_422(
    servers: dict[str, FunctionProcess], routes: dict[str, Route], sender: str
) -> None:
    name, bare = BARE[sender]

    response = post(servers["vm_isolate"].url + sender, changed(name, **bare))

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["detail"].startswith("hostname: looked for ")
    assert error["detail"].endswith("; none held a usable value")
    assert routes["vm_isolate"].count() == 0


TESTS = {
    "alertmanager": "alertmanager_test",
    "grafana": "grafana_test",
    "datadog": "datadog_test",
    "cloud-monitoring": "cloud_monitoring_test",
    "splunk": "splunk_test",
}


@pytest.mark.parametrize(("sender", "name"), TESTS.items())
def test_a_test_notification_publishes_nothing(
    servers: dict[str, FunctionProcess], routes: dict[str, Route], sender: str, name: str
) -> None:
    response = post(servers["vm_isolate"].url + sender, sample(name))

    assert response.status_code == 202
    assert [s["reason"] for s in response.json()["skipped"]] == ["test-notification"]
    assert routes["vm_isolate"].count() == 0


class AlsoBound(Route):
    """One more queue on a route's exchange, as topology declares `<queue>.test`."""

    def __init__(self, route: Route, routing_key: str) -> None:
        self.channel, self.routing_key, self.exchange = route.channel, routing_key, route.exchange
        self.queue = f"{self.exchange}.{routing_key}"
        self.channel.queue_declare(self.queue)
        self.channel.queue_bind(self.queue, self.exchange, routing_key)


@pytest.fixture(scope="module")
def forwarding_tests(
    broker: BrokerNode,
    make_route: Callable[[str], Route],
    start_function: Callable[..., FunctionProcess],
) -> Iterator[tuple[FunctionProcess, Route, Route]]:
    """vm_isolate with SENDER_FORWARD_TESTS=1, its orders' and its tests' queues bound."""
    orders = make_route("vm.isolate")
    tests = AlsoBound(orders, "vm.isolate.test")
    env = function_env(broker, orders.exchange, SENDER_FORWARD_TESTS="1")
    yield start_function("vm_isolate", env), orders, tests
    orders.channel.queue_delete(tests.queue)


@pytest.mark.parametrize("sender", ["alertmanager", "grafana", "datadog", "splunk"])
def test_a_forwarded_test_notification_lands_on_the_test_queue_only(
    forwarding_tests: tuple[FunctionProcess, Route, Route], sender: str
) -> None:
    server, orders, tests = forwarding_tests

    response = post(server.url + sender, sample(TESTS[sender]))

    assert response.status_code == 202, response.text
    [message] = tests.messages()
    assert message.routing_key == "vm.isolate.test"
    assert message.properties.type == "event-relay.vm_isolate.test"
    assert message.properties.message_id == response.json()["ids"][0]
    assert orders.count() == 0


@pytest.fixture(scope="module")
def alertmanager_to_vm_isolate(
    broker: BrokerNode, make_route: Callable[[str], Route], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Alertmanager, Route, Path]]:
    """A real Alertmanager sending to vm_isolate, whose log shows what each request became."""
    route = make_route("vm.isolate")
    log = tmp_path_factory.mktemp("function") / "vm_isolate.log"
    server = FunctionProcess(
        "vm_isolate", free_port(), function_env(broker, route.exchange), log_path=log
    )
    server.start()
    manager = Alertmanager(tmp_path_factory.mktemp("alertmanager"), server.url + "alertmanager")
    try:
        yield manager.start(), route, log
    finally:
        manager.stop()
        server.stop()


@pytest.mark.skipif(not Path(BINARY).exists(), reason="Prometheus Alertmanager is not installed")
def test_amtools_test_alert_through_a_real_alertmanager_publishes_nothing(
    alertmanager_to_vm_isolate: tuple[Alertmanager, Route, Path],
) -> None:
    """`amtool alert add TestAlert`: the way docs/senders.md gives to test an Alertmanager."""
    manager, route, log = alertmanager_to_vm_isolate
    amtool = [
        "amtool",
        f"--alertmanager.url={manager.url}",
        "alert",
        "add",
        "TestAlert",
        "instance=Alertmanager",
        "--annotation=summary=Notification test",
    ]
    subprocess.run(amtool, check=True, capture_output=True, timeout=30)
    # A real alert too, in a group of its own: once it is on the queue, both were sent.
    real = alert(f"{HOST}:9100", "Outbound connections to a known C2 server")
    httpx.post(f"{manager.url}/api/v2/alerts", json=[real], timeout=10).raise_for_status()

    deadline, sent = time.monotonic() + 30, _sender_lines(log)
    while len(sent) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        sent = _sender_lines(log)
    messages = route.messages()

    assert [m.body["data"]["hostname"] for m in messages] == [HOST]
    assert sorted(line["skipped"] != [] for line in sent) == [False, True]
    [test] = [line for line in sent if line["skipped"]]
    assert test["skipped"] == [{"pointer": "/alerts/0", "reason": "test-notification"}]
    assert (test["status"], test["event_ids"]) == (202, [])


def _sender_lines(log: Path) -> list[dict[str, Any]]:
    return [line for line in request_lines(log) if line.get("sender") == "alertmanager"]
