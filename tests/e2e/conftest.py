"""End-to-end helpers: an exchange and queue of a test's own, and function servers on it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from deploy.broker import BrokerNode, free_port
from deploy.function_process import FunctionProcess
from tests.conftest import broker_connection_params

__all__ = [
    "EVENT",
    "PROBLEM",
    "Delivered",
    "Route",
    "free_port",
    "function_env",
    "post_event",
    "sample_event",
]

EVENTS = Path(__file__).parent.parent / "events"
PROBLEM = "application/problem+json"


def sample_event(name: str) -> dict[str, Any]:
    """The sample event of function `name`: tests/events/<name>.json."""
    loaded: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return loaded


EVENT = sample_event("vm_isolate")


def post_event(url: str, body: Any = EVENT, **kwargs: Any) -> httpx.Response:
    """POST `body` (JSON-encoded unless bytes) as application/json; headers add to that."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return httpx.post(url, content=body, headers=headers, timeout=30, **kwargs)


@dataclass
class Delivered:
    routing_key: str
    properties: pika.BasicProperties
    body: dict[str, Any]


class Route:
    """A topic exchange of the test's own with one queue bound to `routing_key`."""

    def __init__(self, channel: BlockingChannel, routing_key: str) -> None:
        self.channel = channel
        self.routing_key = routing_key
        self.exchange = f"test-{uuid.uuid4().hex[:12]}"
        self.queue = f"{self.exchange}.{routing_key}"
        channel.exchange_declare(self.exchange, "topic", auto_delete=False)
        channel.queue_declare(self.queue)
        channel.queue_bind(self.queue, self.exchange, routing_key)

    def messages(self) -> list[Delivered]:
        """Take every message waiting on the queue."""
        taken: list[Delivered] = []
        while True:
            method, properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return taken
            taken.append(Delivered(method.routing_key, properties, json.loads(body)))

    def count(self) -> int:
        return int(self.channel.queue_declare(self.queue, passive=True).method.message_count)

    def delete(self) -> None:
        self.channel.queue_delete(self.queue)
        self.channel.exchange_delete(self.exchange)


@pytest.fixture(scope="module")
def module_channel(broker: BrokerNode) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(broker_connection_params(broker))
    yield connection.channel()
    connection.close()


@pytest.fixture(scope="module")
def make_route(module_channel: BlockingChannel) -> Iterator[Callable[[str], Route]]:
    routes: list[Route] = []

    def make(routing_key: str) -> Route:
        routes.append(Route(module_channel, routing_key))
        return routes[-1]

    yield make
    for route in routes:
        route.delete()


@pytest.fixture(scope="module")
def route(make_route: Callable[[str], Route]) -> Route:
    """vm_isolate's routing key on an exchange of the module's own; a module may bind another."""
    return make_route("vm.isolate")


@pytest.fixture
def empty_queue(route: Route) -> None:
    """Each test starts with the route's queue empty: modules opt in with `usefixtures`."""
    route.messages()


@pytest.fixture
def broker_settings(broker: BrokerNode, monkeypatch: pytest.MonkeyPatch) -> None:
    """The functions' own AMQP_* settings in this process's environment, for the code a test
    runs in-process (a Publisher, topology) to read."""
    for name, value in broker.client_env().items():
        monkeypatch.setenv(name, value)


def function_env(broker: BrokerNode, exchange: str, **extra: str) -> dict[str, str]:
    """What a function needs to reach the test broker, with authentication off unless set."""
    env = {**broker.client_env(), "AMQP_EXCHANGE": exchange, "AUTH_DISABLED": "1"}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def start_function(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., FunctionProcess]]:
    """Start functions-framework servers; all are stopped at the end of the module."""
    started: list[FunctionProcess] = []
    logs: Path = tmp_path_factory.mktemp("function-logs")

    def start(name: str, env: dict[str, str]) -> FunctionProcess:
        log_path = logs / f"{name}-{len(started)}.log"
        server = FunctionProcess(name, free_port(), env, log_path=log_path)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def run_function(tmp_path: Path) -> Iterator[Callable[..., FunctionProcess]]:
    """Start vm_isolate with the given environment, logging to tmp_path/function-<n>.log;
    stopped (SIGTERM) after the test."""
    started: list[FunctionProcess] = []

    def run(env: dict[str, str]) -> FunctionProcess:
        log = tmp_path / f"function-{len(started)}.log"
        started.append(FunctionProcess("vm_isolate", free_port(), env, log_path=log))
        return started[-1].start()

    yield run
    for server in started:
        server.stop()
