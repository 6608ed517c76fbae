"""Secrets from Secret Manager end to end: the function reads its AMQP URL, TLS files and auth
tokens from an in-process fake of SecretManagerService through the real client library.

The fake runs in the test process; each function gets SECRET_MANAGER_EMULATOR_HOST and
GOOGLE_CLOUD_PROJECT, and every secret setting as NAME_SECRET.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from deploy.broker import BrokerNode
from deploy.function_process import FunctionProcess
from tests.e2e.conftest import EVENT, Route, free_port
from tests.secret_manager_fake import SecretManagerFake

PROJECT = "relay-test-project"
TOKEN_V1, TOKEN_V2 = "sm-token-v1-4c1f0e", "sm-token-v2-93ab7d"
TTL = 1.0  # SECRETS_CACHE_SECONDS of the functions here


pytestmark = pytest.mark.usefixtures("empty_queue")


@pytest.fixture(scope="module")
def fake(broker: BrokerNode) -> Iterator[SecretManagerFake]:
    with SecretManagerFake(project=PROJECT) as running:
        tls = broker.tls
        running.set("amqp-url", broker.url())
        running.set("amqp-ca", tls.ca_cert.read_text())
        running.set("amqp-client-cert", tls.client_cert.read_text())
        running.set("amqp-client-key", tls.client_key.read_text())
        yield running


@pytest.fixture(scope="module")
def start(
    fake: SecretManagerFake, route: Route, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., tuple[FunctionProcess, Path]]]:
    """Start vm_isolate with every secret from the fake; keyword arguments override settings."""
    logs = tmp_path_factory.mktemp("secret-manager-logs")
    started: list[FunctionProcess] = []

    def run(auth_secret: str, **overrides: str) -> tuple[FunctionProcess, Path]:
        env = {
            "SECRET_MANAGER_EMULATOR_HOST": fake.address,
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "SECRETS_CACHE_SECONDS": str(TTL),
            "AMQP_EXCHANGE": route.exchange,
            "AMQP_URL_SECRET": "amqp-url",
            # The forms a deployment may use: a short name, name:version, a full path.
            "AMQP_CA_CERT_SECRET": "amqp-ca:latest",
            "AMQP_CLIENT_CERT_SECRET": f"projects/{PROJECT}/secrets/amqp-client-cert",
            "AMQP_CLIENT_KEY_SECRET": f"projects/{PROJECT}/secrets/amqp-client-key/versions/1",
            "AMQP_TLS_SERVER_NAME": "localhost",
            "AUTH_MODE": "bearer",
            "AUTH_SECRETS_SECRET": auth_secret,
            **overrides,
        }
        log = logs / f"{auth_secret}-{len(started)}.log"
        server = FunctionProcess("vm_isolate", free_port(), env, log_path=log)
        started.append(server)
        return server.start(), log

    yield run
    for server in started:
        server.stop()


def post(server: FunctionProcess, token: str) -> httpx.Response:
    return httpx.post(
        server.url, json=EVENT, headers={"authorization": f"Bearer {token}"}, timeout=30
    )


def eventually(check: Callable[[], bool], within: float = 10 * TTL) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_a_function_with_every_secret_in_secret_manager_publishes(
    fake: SecretManagerFake, start: Callable[..., tuple[FunctionProcess, Path]], route: Route
) -> None:
    fake.set("tokens-publish", TOKEN_V1)
    server, log = start("tokens-publish")

    response = post(server, TOKEN_V1)

    assert response.status_code == 202, response.text
    [message] = route.messages()
    assert message.properties.message_id == response.json()["id"]
    accessed = set(fake.calls)
    assert f"projects/{PROJECT}/secrets/amqp-url/versions/latest" in accessed
    assert f"projects/{PROJECT}/secrets/amqp-ca/versions/latest" in accessed
    assert f"projects/{PROJECT}/secrets/amqp-client-key/versions/1" in accessed
    assert f"projects/{PROJECT}/secrets/tokens-publish/versions/latest" in accessed
    output = log.read_text()
    assert TOKEN_V1 not in output
    assert "PRIVATE KEY" not in output


def test_a_new_version_of_the_auth_secret_takes_effect_after_the_ttl(
    fake: SecretManagerFake, start: Callable[..., tuple[FunctionProcess, Path]], route: Route
) -> None:
    fake.set("tokens-rotate", TOKEN_V1)
    server, _log = start("tokens-rotate")
    assert post(server, TOKEN_V1).status_code == 202
    assert post(server, TOKEN_V2).status_code == 401

    fake.set("tokens-rotate", f"{TOKEN_V1}\n{TOKEN_V2}\n")  # version 2: both while senders move
    assert eventually(lambda: post(server, TOKEN_V2).status_code == 202)
    assert post(server, TOKEN_V1).status_code == 202
    fake.set("tokens-rotate", TOKEN_V2)  # version 3: the old one removed
    assert eventually(lambda: post(server, TOKEN_V1).status_code == 401)
    assert post(server, TOKEN_V2).status_code == 202

    accepted = route.messages()
    assert len(accepted) >= 4  # the 202s: one per accepted request


def test_the_cache_spares_secret_manager_within_the_ttl(
    fake: SecretManagerFake, start: Callable[..., tuple[FunctionProcess, Path]], route: Route
) -> None:
    fake.set("tokens-cached", TOKEN_V1)
    server, _log = start("tokens-cached", SECRETS_CACHE_SECONDS="300")
    name = f"projects/{PROJECT}/secrets/tokens-cached/versions/latest"

    for _ in range(10):
        assert post(server, TOKEN_V1).status_code == 202

    # Once by the gunicorn master at start (the check), once by the worker.
    assert fake.calls.count(name) <= 2
    assert len(route.messages()) == 10


def timed_post(server: FunctionProcess, token: str) -> float:
    started = time.perf_counter()
    assert post(server, token).status_code == 202
    return time.perf_counter() - started


def test_a_slow_refresh_does_not_delay_the_requests_that_need_no_new_value(
    fake: SecretManagerFake, start: Callable[..., tuple[FunctionProcess, Path]], route: Route
) -> None:
    fake.set("tokens-slow", TOKEN_V1)
    server, _log = start("tokens-slow")
    before = [timed_post(server, TOKEN_V1) for _ in range(5)]
    name = f"projects/{PROJECT}/secrets/tokens-slow/versions/latest"
    reads = fake.calls.count(name)

    fake.delay = 2.0  # every access now takes 2 s: the refresh the next request starts, too
    try:
        time.sleep(TTL + 0.2)  # the cached token expires
        started = time.monotonic()
        during = [timed_post(server, TOKEN_V1)]  # starts the refresh, answered from the cache
        while time.monotonic() - started < 1.5:  # the refresh is still running meanwhile
            during.append(timed_post(server, TOKEN_V1))
        assert fake.calls.count(name) == reads + 1  # one refresh, in flight through all of them
    finally:
        fake.delay = 0.0

    print(
        f"latency before: median {statistics.median(before) * 1000:.1f} ms; during a 2 s "
        f"refresh: median {statistics.median(during) * 1000:.1f} ms, max {max(during) * 1000:.1f}"
        f" ms over {len(during)} requests"
    )
    # A refresh on the event loop would have held the first of them for 2 s, and the others
    # behind it: each stays within a few milliseconds of the latency before (plus scheduling
    # noise on a busy machine for the slowest one).
    assert statistics.median(during) < statistics.median(before) + 0.02
    assert max(during) < max(before) + 0.3
    fake.set("tokens-slow", TOKEN_V2)  # and the refresh still takes effect, as before
    assert eventually(lambda: post(server, TOKEN_V2).status_code == 202)
    route.messages()


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.PERMISSION_DENIED, "PermissionDenied"),
        (grpc.StatusCode.NOT_FOUND, "NotFound"),
    ],
)
def test_an_auth_secret_that_can_no_longer_be_read_keeps_its_last_value_and_says_why(
    fake: SecretManagerFake,
    start: Callable[..., tuple[FunctionProcess, Path]],
    route: Route,
    code: grpc.StatusCode,
    expected: str,
) -> None:
    secret = f"tokens-{code.name.lower().replace('_', '-')}"
    fake.set(secret, TOKEN_V1)
    server, log = start(secret)
    assert post(server, TOKEN_V1).status_code == 202
    reads = fake.access_count
    fake.fail(secret, code)

    # A Secret Manager outage must not shut the senders out: the last good value is kept,
    # and the failed refresh is logged, naming the setting and the secret, never the value.
    time.sleep(TTL + 0.2)  # the cached value expires: the next request starts a refresh
    assert post(server, TOKEN_V1).status_code == 202
    assert eventually(lambda: fake.access_count > reads)  # it runs beside the requests
    assert post(server, "wrong-token").status_code == 401

    def secret_warnings() -> list[dict[str, str]]:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line[:1] == "{"]
        return [line for line in lines if line.get("logger") == "event_relay.secrets"]

    assert eventually(lambda: bool(secret_warnings()))
    warning = secret_warnings()[-1]
    message = warning["message"]
    assert warning["severity"] == "WARNING"
    assert "AUTH_SECRETS_SECRET" in message
    assert f"projects/{PROJECT}/secrets/{secret}/versions/latest" in message
    assert expected in message
    assert TOKEN_V1 not in log.read_text()
    assert len(route.messages()) == 2

    fake.fail(secret, None)  # healed: still served, without a restart
    assert post(server, TOKEN_V1).status_code == 202
    route.messages()


def test_a_missing_amqp_secret_is_a_503_naming_it_and_never_its_value(
    broker: BrokerNode,
    fake: SecretManagerFake,
    start: Callable[..., tuple[FunctionProcess, Path]],
    route: Route,
) -> None:
    fake.set("tokens-amqp-missing", TOKEN_V1)
    server, log = start("tokens-amqp-missing", AMQP_URL_SECRET="no-such-amqp-url")

    response = post(server, TOKEN_V1)

    assert response.status_code == 503
    assert response.json()["type"] == "urn:event-relay:problem:secret-unavailable"
    assert route.count() == 0
    output = log.read_text()
    assert "AMQP_URL_SECRET" in output
    assert f"projects/{PROJECT}/secrets/no-such-amqp-url/versions/latest" in output
    assert broker.password not in output
    assert TOKEN_V1 not in output


def test_a_denied_certificate_secret_is_a_503(
    fake: SecretManagerFake, start: Callable[..., tuple[FunctionProcess, Path]], route: Route
) -> None:
    fake.set("tokens-key-denied", TOKEN_V1)
    fake.set("denied-client-key", "-----BEGIN PRIVATE KEY-----\nnot for you\n")
    fake.fail("denied-client-key", grpc.StatusCode.PERMISSION_DENIED)
    server, log = start("tokens-key-denied", AMQP_CLIENT_KEY_SECRET="denied-client-key")

    response = post(server, TOKEN_V1)

    assert response.status_code == 503
    assert route.count() == 0
    output = log.read_text()
    assert "AMQP_CLIENT_KEY_SECRET" in output
    assert "denied-client-key" in output
    assert "not for you" not in output


def test_a_missing_auth_secret_at_start_refuses_to_start(
    fake: SecretManagerFake, route: Route, tmp_path: Path
) -> None:
    env = {
        "SECRET_MANAGER_EMULATOR_HOST": fake.address,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "AMQP_EXCHANGE": route.exchange,
        "AMQP_URL_SECRET": "amqp-url",
        "AMQP_CA_CERT_SECRET": "amqp-ca",
        "AMQP_CLIENT_CERT_SECRET": "amqp-client-cert",
        "AMQP_CLIENT_KEY_SECRET": "amqp-client-key",
        "AUTH_MODE": "bearer",
        "AUTH_SECRETS_SECRET": "never-created",
    }
    log = tmp_path / "start.log"

    with pytest.raises(RuntimeError, match="exited"):
        FunctionProcess("vm_isolate", free_port(), env, log_path=log).start(wait=30)

    assert "AUTH_SECRETS_SECRET" in log.read_text()
