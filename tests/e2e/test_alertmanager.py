"""A real Prometheus Alertmanager sends its webhook batch to a function, with basic auth."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.broker import BrokerNode
from deploy.function_process import FunctionProcess
from tests.e2e.conftest import Delivered, Route, free_port, function_env

BINARY = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
USER, PASSWORD = "alertmanager", "am-webhook-secret"

pytestmark = pytest.mark.skipif(
    not Path(BINARY).exists(),
    reason="Prometheus Alertmanager is not installed: apt-get install -y prometheus-alertmanager",
)

CONFIG = """
route:
  receiver: event-relay
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: event-relay
    webhook_configs:
      - url: {url}
        send_resolved: false
        http_config:
          basic_auth:
            username: {user}
            password: {password}
"""


class Alertmanager:
    """`prometheus-alertmanager` on loopback, clustering off, with its own storage."""

    def __init__(self, workdir: Path, webhook_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "alertmanager.yml"
        config.write_text(CONFIG.format(url=webhook_url, user=USER, password=PASSWORD))
        self.log = workdir / "alertmanager.log"
        self.command = [
            BINARY,
            f"--config.file={config}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=debug",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Alertmanager:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Alertmanager exited at start: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("Alertmanager did not become ready within 20 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def function(
    broker: BrokerNode, route: Route, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FunctionProcess, Path]]:
    """vm_isolate with basic auth, its log kept to see the requests it received."""
    log = tmp_path_factory.mktemp("function") / "vm_isolate.log"
    env = function_env(
        broker,
        route.exchange,
        AUTH_DISABLED="0",
        AUTH_MODE="basic",
        AUTH_SECRETS=f"{USER}:{PASSWORD}",
    )
    server = FunctionProcess("vm_isolate", free_port(), env, log_path=log)
    server.start()
    yield server, log
    server.stop()


@pytest.fixture(scope="module")
def alertmanager(
    function: tuple[FunctionProcess, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Alertmanager]:
    server, _ = function
    manager = Alertmanager(tmp_path_factory.mktemp("alertmanager"), server.url + "alertmanager")
    manager.start()
    yield manager
    manager.stop()
    assert manager.process is not None
    assert manager.process.poll() is not None


def alert(instance: str, summary: str) -> dict[str, object]:
    return {
        "labels": {
            "alertname": "CompromisedHost",
            "instance": instance,
            "job": "node",
            "severity": "critical",
        },
        "annotations": {"summary": summary},
        "generatorURL": "http://prometheus.example.com:9090/graph",
    }


def request_lines(log: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "event_relay.request"]


def test_each_firing_alert_of_alertmanagers_batch_lands_as_its_own_message(
    alertmanager: Alertmanager, function: tuple[FunctionProcess, Path], route: Route
) -> None:
    _, log = function
    alerts = [
        alert("web-01.prod.example.com:9100", "Outbound connections to a known C2 server"),
        alert("db-07.prod.example.com:9100", "Crypto-miner process running"),
    ]
    posted = httpx.post(f"{alertmanager.url}/api/v2/alerts", json=alerts, timeout=10)
    assert posted.status_code == 200, posted.text

    messages: list[Delivered] = []
    deadline = time.monotonic() + 30
    while len(messages) < 2 and time.monotonic() < deadline:
        messages += route.messages()
        time.sleep(0.2)

    assert sorted(m.body["data"]["hostname"] for m in messages) == [
        "db-07.prod.example.com",
        "web-01.prod.example.com",
    ]
    assert {m.routing_key for m in messages} == {"vm.isolate"}
    assert {m.body["data"]["source"] for m in messages} == {"alertmanager"}
    assert len({m.properties.message_id for m in messages}) == 2
    # Alertmanager grouped both alerts into one request, and authenticated with basic auth.
    batches = [line for line in request_lines(log) if line.get("sender") == "alertmanager"]
    assert [(b["status"], len(b["event_ids"])) for b in batches] == [(202, 2)]
    assert sorted(batches[0]["event_ids"]) == sorted(m.properties.message_id for m in messages)


def test_alertmanager_with_a_wrong_password_is_refused(
    function: tuple[FunctionProcess, Path], route: Route
) -> None:
    """What the function answers Alertmanager when its http_config does not match."""
    server, _ = function
    response = httpx.post(
        server.url + "alertmanager",
        json={"version": "4", "alerts": []},
        auth=(USER, "wrong"),
        timeout=10,
    )

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert route.count() == 0
