"""TLS is mutual and verified, a hung broker costs one timeout, bad settings fail at start."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from deploy import REPO
from deploy.broker import BrokerNode, issue_foreign_client
from deploy.function_process import FunctionProcess
from tests.e2e.conftest import EVENT, Route, free_port, function_env
from tests.tcp_proxy import TcpProxy


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return issue_foreign_client(tmp_path_factory.mktemp("foreign"))


def post(server: FunctionProcess) -> httpx.Response:
    return httpx.post(server.url, json=EVENT, timeout=30)


@pytest.mark.parametrize("variant", ["foreign-client-cert", "untrusted-server-ca", "wrong-name"])
def test_the_broker_link_is_refused_unless_both_sides_are_trusted(
    broker: BrokerNode,
    route: Route,
    foreign: tuple[Path, Path, Path],
    start_function: Callable[..., FunctionProcess],
    variant: str,
) -> None:
    cert, key, foreign_ca = foreign
    overrides = {
        "foreign-client-cert": {
            "AMQP_CLIENT_CERT_FILE": str(cert),
            "AMQP_CLIENT_KEY_FILE": str(key),
        },
        "untrusted-server-ca": {"AMQP_CA_CERT_FILE": str(foreign_ca)},
        "wrong-name": {"AMQP_TLS_SERVER_NAME": "broker.example.com"},
    }[variant]
    # Why each one fails, as the function logs it: refused for the reason under test, not another.
    reason = {
        "foreign-client-cert": "TLSV1_ALERT_UNKNOWN_CA",  # the broker's alert: not its CA
        "untrusted-server-ca": "CERTIFICATE_VERIFY_FAILED",
        "wrong-name": "Hostname mismatch",
    }[variant]
    server = start_function("vm_isolate", function_env(broker, route.exchange, **overrides))

    response = post(server)

    assert response.status_code == 503
    assert response.json()["type"] == "urn:event-relay:problem:broker-unavailable"
    assert int(response.headers["retry-after"]) >= 1
    assert route.count() == 0
    assert server.log_path is not None
    refusals = [
        line
        for line in server.log_path.read_text().splitlines()
        if "cannot connect to the broker" in line
    ]
    assert refusals
    assert reason in refusals[0]


def _start_fails(env: dict[str, str], tmp_path: Path) -> str:
    log = tmp_path / "start.log"
    server = FunctionProcess("vm_isolate", free_port(), env, log_path=log)
    with pytest.raises(RuntimeError, match="exited"):
        server.start(wait=30)
    return log.read_text()


def test_a_function_without_a_client_certificate_refuses_to_start(
    broker: BrokerNode, route: Route, tmp_path: Path
) -> None:
    env = function_env(broker, route.exchange)
    del env["AMQP_CLIENT_CERT_FILE"]

    output = _start_fails(env, tmp_path)

    assert "AMQP_CLIENT_CERT" in output


def test_a_plaintext_url_refuses_to_start_without_the_switch(
    broker: BrokerNode, route: Route, tmp_path: Path
) -> None:
    env = function_env(broker, route.exchange, AMQP_URL="amqp://relay:secret@localhost:5672/")

    output = _start_fails(env, tmp_path)

    assert "AMQP_ALLOW_PLAINTEXT" in output
    assert "secret" not in output  # the password in the URL is never printed


@pytest.fixture
def proxy(broker: BrokerNode) -> Iterator[TcpProxy]:
    with TcpProxy(broker.port) as running:
        yield running


def test_a_hung_broker_gets_503_within_the_publish_timeout_then_serves_again(
    broker: BrokerNode,
    route: Route,
    proxy: TcpProxy,
    start_function: Callable[..., FunctionProcess],
) -> None:
    server = start_function(
        "vm_isolate",
        function_env(
            broker,
            route.exchange,
            AMQP_URL=broker.url(port=proxy.port),
            AMQP_PUBLISH_TIMEOUT="2",
            AMQP_CONNECT_TIMEOUT="1",
        ),
    )
    accepted = [post(server)]
    assert accepted[0].status_code == 202

    proxy.black_hole()
    for _ in range(2):  # the open connection, then a new one that cannot finish its handshake
        started = time.monotonic()
        response = post(server)
        assert response.status_code == 503
        assert time.monotonic() - started < 2 + 1.5
    proxy.resume()

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = post(server)
        if response.status_code == 202:
            accepted.append(response)
            break
        assert response.status_code == 503
        time.sleep(0.5)
    assert len(accepted) == 2, "the function did not serve again once the broker answered"
    queued = {m.properties.message_id for m in route.messages()}
    # At least once: what got 202 is there; a 503 may still have been delivered.
    assert {r.json()["id"] for r in accepted} <= queued


def test_each_request_logs_one_json_line_without_the_payload(
    broker: BrokerNode, route: Route, tmp_path: Path
) -> None:
    log = tmp_path / "function.log"
    with FunctionProcess(
        "vm_isolate", free_port(), function_env(broker, route.exchange), log_path=log
    ) as server:
        accepted = post(server).json()
        refused = httpx.post(server.url, json={**EVENT, "colour": 1}, timeout=30)
    assert refused.status_code == 422

    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    requests = [r for r in records if r.get("logger") == "event_relay.request"]
    assert [r["status"] for r in requests] == [202, 422]
    ok = requests[0]
    assert ok["severity"] == "INFO"
    assert ok["event_id"] == accepted["id"]
    assert ok["event_type"] == "vm_isolate"
    assert ok["routing_key"] == "vm.isolate"
    assert isinstance(ok["latency_ms"], float)
    assert EVENT["summary"] not in log.read_text()
    route.messages()


def import_a_function(
    env: dict[str, str],
    then: str = "",
    python_options: tuple[str, ...] = (),
    *,
    before: str = "",
) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter runs `before`, imports vm_isolate's main.py, as functions-framework
    does, then runs `then`."""
    main = REPO / "functions" / "vm_isolate" / "main.py"
    code = (
        (f"{before}; " if before else "") + "import importlib.util as u; "
        f"s = u.spec_from_file_location('main', {str(main)!r}); "
        f"s.loader.exec_module(u.module_from_spec(s)); {then}"
    )
    return subprocess.run(
        [sys.executable, *python_options, "-c", code],
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )


def test_importing_a_function_loads_no_grpc_nor_the_secret_manager_or_pubsub_client(
    broker: BrokerNode, route: Route
) -> None:
    """Even with the spool on: its client is built by the worker, when first needed; nor the
    sender adapters, which a sender path's first request builds."""
    env = function_env(broker, route.exchange, SPOOL_TOPIC="projects/p/topics/spool")
    result = import_a_function(env, python_options=("-X", "importtime"))
    modules = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "shared.function" in modules  # the import really ran
    heavy = {
        m
        for m in modules
        if m.startswith(
            (
                "grpc",
                "google.cloud.secretmanager",
                "google.cloud.pubsub",
                "google.api_core",
                "shared.adapters",
            )
        )
    }
    assert not heavy


def test_importing_a_function_makes_the_uvicorn_worker_write_each_answer_at_once(
    broker: BrokerNode, route: Route
) -> None:
    """functions-framework's worker class is fixed; the function configures its protocol."""
    result = import_a_function(
        function_env(broker, route.exchange),
        "import uvicorn_worker; "
        "print(uvicorn_worker.UvicornWorker.CONFIG_KWARGS['http'].func.__qualname__)",
    )
    assert result.stdout.splitlines()[-1] == "FunctionProtocol"  # after the start's log


def test_a_function_start_makes_no_collection_and_freezes_what_it_made(
    broker: BrokerNode, route: Route
) -> None:
    """What a start makes lives as long as the process: from the first import of `shared` the
    collector makes no pass at all (at the default thresholds the import made 46, one of them
    full), the start's objects are then frozen out of its walks, and requests get a gen-0
    threshold of 10,000."""
    passes = "[s['collections'] for s in gc.get_stats()]"
    result = import_a_function(
        function_env(broker, route.exchange),
        f"print(gc.get_threshold(), {passes} == passes, gc.get_freeze_count() > 40_000)",
        before=f"import gc, shared; passes = {passes}",
    )
    assert result.stdout.splitlines()[-1] == "(10000, 20, 10) True True"
