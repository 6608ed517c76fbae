"""Every auth mode end to end: functions-framework serves vm_isolate, the TLS broker confirms.

For each mode: the right credential gets a 202 and one message; a missing or wrong one gets a
401 problem with WWW-Authenticate and publishes nothing; two secrets work at once (rotation);
the credential never reaches the log; and authentication runs before the body is parsed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from deploy.broker import BrokerNode
from deploy.function_process import FunctionProcess
from tests.e2e.conftest import EVENT, PROBLEM, Route, free_port, function_env

BODY = json.dumps(EVENT).encode()

OLD_TOKEN, NEW_TOKEN = "old-bearer-7f3a9c", "new-bearer-2b8e41"
OLD_PAIR, NEW_PAIR = "alertmanager:old-pass-55d1", "alertmanager:new-pass-9e07"
OLD_WHSEC = "whsec_" + base64.b64encode(b"old-standard-webhooks-key-0001").decode()
NEW_WHSEC = "whsec_" + base64.b64encode(b"new-standard-webhooks-key-0002").decode()
OLD_GRAFANA, NEW_GRAFANA = "grafana-old-hmac-c41d", "grafana-new-hmac-8a62"

SECRETS = {
    "bearer": (OLD_TOKEN, NEW_TOKEN),
    "basic": (OLD_PAIR, NEW_PAIR),
    "query-token": (OLD_TOKEN, NEW_TOKEN),
    "standard-webhooks": (OLD_WHSEC, NEW_WHSEC),
    "grafana-hmac": (OLD_GRAFANA, NEW_GRAFANA),
}
MODES = list(SECRETS)
# Every secret value and the parts of it that must stay out of logs.
SECRET_VALUES = {
    *(s for pair in SECRETS.values() for s in pair),
    *(s.partition(":")[2] for s in (OLD_PAIR, NEW_PAIR)),
    *(s.removeprefix("whsec_") for s in (OLD_WHSEC, NEW_WHSEC)),
}


pytestmark = pytest.mark.usefixtures("empty_queue")


@dataclass
class Signed:
    """What one request carries: its headers, its query and the credential strings in them."""

    headers: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    credentials: tuple[str, ...] = ()


def sign(mode: str, secret: str, body: bytes = BODY, **options: Any) -> Signed:
    """The credentials `mode` expects, made with `secret`, as the sender would send them."""
    if mode == "bearer":
        return Signed({"authorization": f"Bearer {secret}"}, credentials=(secret,))
    if mode == "basic":
        encoded = base64.b64encode(secret.encode()).decode()
        password = secret.partition(":")[2]
        return Signed({"authorization": f"Basic {encoded}"}, credentials=(encoded, password))
    if mode == "query-token":
        return Signed({}, {"token": secret}, credentials=(secret,))
    if mode == "standard-webhooks":
        msg_id = options.get("msg_id", f"msg_{time.time_ns()}")
        stamp = datetime.fromtimestamp(options.get("timestamp", time.time()), UTC)
        signature = Webhook(secret).sign(msg_id, stamp, body.decode())
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": signature,
        }
        return Signed(headers, credentials=(signature.partition(",")[2], secret))
    if mode == "grafana-hmac":
        timestamp = options.get("timestamp")
        signed = body if timestamp is None else f"{timestamp}:".encode() + body
        digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        headers = {"x-grafana-alerting-signature": digest}
        if timestamp is not None:
            headers["x-grafana-alerting-signature-timestamp"] = str(timestamp)
        return Signed(headers, credentials=(digest, secret))
    raise AssertionError(mode)


def wrong_secret(mode: str) -> str:
    return {
        "basic": "alertmanager:guessed-pass-31f0",
        "standard-webhooks": "whsec_" + base64.b64encode(b"an-attacker-key-0000000000").decode(),
    }.get(mode, "guessed-secret-31f0")


def post(
    server: FunctionProcess,
    signed: Signed | None = None,
    body: bytes = BODY,
    content_type: str = "application/json",
) -> httpx.Response:
    signed = signed or Signed({})
    return httpx.post(
        server.url,
        content=body,
        headers={"content-type": content_type, **signed.headers},
        params=signed.params,
        timeout=30,
    )


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"]
    assert response.json()["type"] == "urn:event-relay:problem:unauthorized"


class Servers:
    """One functions-framework server per configuration, started on first use, each with a log
    file of its own; all are stopped at the end of the module."""

    def __init__(self, broker: BrokerNode, route: Route, logs: Path) -> None:
        self.broker, self.route, self.logs = broker, route, logs
        self.started: dict[str, FunctionProcess] = {}
        self.log_paths: dict[str, Path] = {}

    def get(self, key: str, **env: str) -> FunctionProcess:
        if key not in self.started:
            log_path = self.logs / f"{key}.log"
            environment = function_env(self.broker, self.route.exchange, **env)
            if "AUTH_DISABLED" not in env:
                del environment["AUTH_DISABLED"]
            server = FunctionProcess("vm_isolate", free_port(), environment, log_path=log_path)
            self.started[key], self.log_paths[key] = server.start(), log_path
        return self.started[key]

    def mode(self, mode: str) -> FunctionProcess:
        """A server in `mode` accepting either of its two secrets (a rotation in progress)."""
        return self.get(mode, AUTH_MODE=mode, AUTH_SECRETS=",".join(SECRETS[mode]))

    def log(self, key: str) -> str:
        return self.log_paths[key].read_text()

    def stop(self) -> None:
        for server in self.started.values():
            server.stop()


@pytest.fixture(scope="module")
def servers(
    broker: BrokerNode, route: Route, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    running = Servers(broker, route, tmp_path_factory.mktemp("auth-logs"))
    yield running
    running.stop()


# Credentials sent by the tests, per mode; the last test checks none of them reached a log.
SENT: dict[str, set[str]] = {mode: set() for mode in MODES}


def sent(mode: str, signed: Signed) -> Signed:
    SENT[mode].update(signed.credentials)
    return signed


@pytest.mark.parametrize("mode", MODES)
def test_the_right_credential_is_accepted_and_published(
    servers: Servers, route: Route, mode: str
) -> None:
    server = servers.mode(mode)

    for secret in SECRETS[mode]:  # old and new both work while rotating
        response = post(server, sent(mode, sign(mode, secret)))
        assert response.status_code == 202, response.text

    messages = route.messages()
    assert len(messages) == 2
    assert {m.routing_key for m in messages} == {"vm.isolate"}


@pytest.mark.parametrize("mode", MODES)
def test_a_missing_or_wrong_credential_is_a_401_and_publishes_nothing(
    servers: Servers, route: Route, mode: str
) -> None:
    server = servers.mode(mode)

    assert_unauthorized(post(server))
    assert_unauthorized(post(server, sent(mode, sign(mode, wrong_secret(mode)))))
    # A credential made for another body does not carry over to this one.
    other = sent(mode, sign(mode, SECRETS[mode][0], body=b'{"other": 1}'))
    if mode in ("standard-webhooks", "grafana-hmac"):
        assert_unauthorized(post(server, other))
    assert route.count() == 0


WRONG_CREDENTIALS = {
    "bearer": [{"authorization": f"Basic {OLD_TOKEN}"}, {"authorization": "Bearer"}],
    "basic": [
        {"authorization": "Basic !!!not-base64!!!"},
        {"authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"authorization": f"Bearer {OLD_TOKEN}"},
    ],
    "query-token": [{"authorization": f"Bearer {OLD_TOKEN}"}],
    "standard-webhooks": [
        {"webhook-id": "m1", "webhook-timestamp": "{now}", "webhook-signature": "v1"},
        {"webhook-id": "m1", "webhook-timestamp": "{now}", "webhook-signature": "garbage"},
        {"webhook-id": "m1", "webhook-timestamp": "{now}", "webhook-signature": "v1,!!!"},
        {"webhook-id": "m1", "webhook-timestamp": "{now}", "webhook-signature": "v1a,x v2"},
        {"webhook-id": "m1", "webhook-timestamp": "soon", "webhook-signature": "v1,AAAA"},
        {"webhook-id": "m1", "webhook-timestamp": "-5", "webhook-signature": "v1,AAAA"},
        {"webhook-id": "m1", "webhook-timestamp": "9" * 40, "webhook-signature": "v1,AAAA"},
    ],
    "grafana-hmac": [
        {"x-grafana-alerting-signature": "zz-not-hex"},
        {"x-grafana-alerting-signature": "a" * 5000},
        {"x-grafana-alerting-signature": "ab", "x-grafana-alerting-signature-timestamp": "x"},
    ],
}


@pytest.mark.parametrize(
    ("mode", "headers"),
    [(mode, headers) for mode, cases in WRONG_CREDENTIALS.items() for headers in cases],
)
def test_malformed_credentials_are_a_401_never_a_500(
    servers: Servers, route: Route, mode: str, headers: dict[str, str]
) -> None:
    server = servers.mode(mode)
    now = str(int(time.time()))

    response = post(server, Signed({k: v.replace("{now}", now) for k, v in headers.items()}))

    assert_unauthorized(response)
    assert route.count() == 0


@pytest.mark.parametrize("mode", MODES)
def test_authentication_comes_before_the_body_is_parsed(
    servers: Servers, route: Route, mode: str
) -> None:
    server = servers.mode(mode)

    assert_unauthorized(post(server, body=b'{"hostname": '))
    assert_unauthorized(post(server, body=b"[1, 2]"))
    assert_unauthorized(post(server, content_type="text/plain"))
    assert_unauthorized(post(server, body=json.dumps({"colour": "red"}).encode()))
    # With the credential, the same malformed body is the caller's 400.
    malformed = b'{"hostname": '
    response = post(server, sent(mode, sign(mode, SECRETS[mode][1], body=malformed)), malformed)
    assert response.status_code == 400
    assert route.count() == 0


def test_the_webhook_id_is_the_event_id_and_a_retry_keeps_it(
    servers: Servers, route: Route
) -> None:
    server = servers.mode("standard-webhooks")
    first = sent("standard-webhooks", sign("standard-webhooks", OLD_WHSEC, msg_id="msg_2k9XQ"))
    retry = sent("standard-webhooks", sign("standard-webhooks", NEW_WHSEC, msg_id="msg_2k9XQ"))

    answers = [post(server, first), post(server, retry)]

    assert [a.status_code for a in answers] == [202, 202]
    assert [a.json()["id"] for a in answers] == ["msg_2k9XQ", "msg_2k9XQ"]
    messages = route.messages()
    assert [m.properties.message_id for m in messages] == ["msg_2k9XQ", "msg_2k9XQ"]
    assert [m.body["id"] for m in messages] == ["msg_2k9XQ", "msg_2k9XQ"]


def test_the_webhook_id_wins_over_an_idempotency_key(servers: Servers, route: Route) -> None:
    server = servers.mode("standard-webhooks")
    signed = sent("standard-webhooks", sign("standard-webhooks", OLD_WHSEC, msg_id="msg_wins"))
    signed.headers["idempotency-key"] = "caller-key"

    assert post(server, signed).json()["id"] == "msg_wins"
    assert [m.properties.message_id for m in route.messages()] == ["msg_wins"]


@pytest.mark.parametrize("mode", ["standard-webhooks", "grafana-hmac"])
def test_a_signature_outside_the_replay_window_is_a_401(
    servers: Servers, route: Route, mode: str
) -> None:
    server = servers.mode(mode)
    stale = int(time.time()) - 301

    assert_unauthorized(post(server, sent(mode, sign(mode, SECRETS[mode][0], timestamp=stale))))
    assert route.count() == 0


def test_grafana_signs_the_body_with_or_without_a_timestamp(servers: Servers, route: Route) -> None:
    server = servers.mode("grafana-hmac")
    now = int(time.time())

    bare = sent("grafana-hmac", sign("grafana-hmac", OLD_GRAFANA))
    stamped = sent("grafana-hmac", sign("grafana-hmac", NEW_GRAFANA, timestamp=now))
    assert post(server, bare).status_code == 202
    assert post(server, stamped).status_code == 202
    # A timestamp header the signature did not cover: refused.
    bare.headers["x-grafana-alerting-signature-timestamp"] = str(now)
    assert_unauthorized(post(server, bare))
    assert len(route.messages()) == 2


def test_grafana_with_a_configured_timestamp_header_requires_it(
    servers: Servers, route: Route
) -> None:
    server = servers.get(
        "grafana-required",
        AUTH_MODE="grafana-hmac",
        AUTH_SECRETS=OLD_GRAFANA,
        AUTH_TIMESTAMP_HEADER="X-Relay-Timestamp",
    )
    now = int(time.time())
    stamped = sent("grafana-hmac", sign("grafana-hmac", OLD_GRAFANA, timestamp=now))
    stamped.headers["x-relay-timestamp"] = stamped.headers.pop(
        "x-grafana-alerting-signature-timestamp"
    )

    assert_unauthorized(post(server, sent("grafana-hmac", sign("grafana-hmac", OLD_GRAFANA))))
    assert post(server, stamped).status_code == 202
    assert len(route.messages()) == 1


def test_a_secret_rotated_in_its_file_takes_effect_without_a_restart(
    servers: Servers, route: Route, tmp_path_factory: pytest.TempPathFactory
) -> None:
    secrets_file = tmp_path_factory.mktemp("rotation") / "auth-secrets"
    secrets_file.write_text(f"{OLD_TOKEN}\n")
    server = servers.get(
        "file-rotation",
        AUTH_MODE="bearer",
        AUTH_SECRETS_FILE=str(secrets_file),
        SECRETS_CACHE_SECONDS="0",
    )
    old, new = sent("bearer", sign("bearer", OLD_TOKEN)), sent("bearer", sign("bearer", NEW_TOKEN))

    assert post(server, old).status_code == 202
    assert_unauthorized(post(server, new))
    secrets_file.write_text(f"{OLD_TOKEN}\n{NEW_TOKEN}\n")  # step 1: both
    assert post(server, old).status_code == 202
    assert post(server, new).status_code == 202
    secrets_file.write_text(f"{NEW_TOKEN}\n")  # step 2: the old one removed
    assert_unauthorized(post(server, old))
    assert post(server, new).status_code == 202

    assert len(route.messages()) == 4


def test_an_unreadable_secrets_file_is_a_503_naming_the_setting(
    servers: Servers, route: Route, tmp_path_factory: pytest.TempPathFactory
) -> None:
    secrets_file = tmp_path_factory.mktemp("unreadable") / "auth-secrets"
    secrets_file.write_text(f"{OLD_TOKEN}\n")
    server = servers.get(
        "file-gone",
        AUTH_MODE="bearer",
        AUTH_SECRETS_FILE=str(secrets_file),
        SECRETS_CACHE_SECONDS="0",
    )
    secrets_file.unlink()

    response = post(server, sent("bearer", sign("bearer", OLD_TOKEN)))

    assert response.status_code == 503
    assert response.json()["type"] == "urn:event-relay:problem:secret-unavailable"
    assert "retry-after" in response.headers
    assert route.count() == 0
    assert "AUTH_SECRETS_FILE" in servers.log("file-gone")


def test_the_query_token_is_never_logged(servers: Servers, route: Route) -> None:
    server = servers.mode("query-token")
    accepted = sent("query-token", sign("query-token", OLD_TOKEN))
    refused = sent("query-token", sign("query-token", "wrong-query-token-d0e1"))
    # The token's name in another case and a second token parameter: both are still secret.
    refused.params = {"Token": refused.params["token"], "x": "1"}

    assert post(server, accepted).status_code == 202
    assert_unauthorized(post(server, refused))
    response = httpx.post(
        f"{server.url}?token={NEW_TOKEN}&token=wrong-query-token-d0e1",
        content=b"{",
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code in (400, 401)

    log = servers.log("query-token")
    assert '"status": 202' in log  # the requests were logged
    assert '"status": 401' in log
    for token in (OLD_TOKEN, NEW_TOKEN, "wrong-query-token-d0e1"):
        assert token not in log
    route.messages()


def test_auth_failures_are_logged_with_a_reason_but_no_credential(servers: Servers) -> None:
    """Runs after the tests above: every server's log holds their refusals, never a secret."""
    checked = 0
    for mode in MODES:
        if mode not in servers.started:
            continue
        log = servers.log(mode)
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        refusals = [line for line in lines if line.get("status") == 401]
        assert refusals, mode
        assert all(line.get("reason") for line in refusals)
        for secret in {*SECRET_VALUES, *SENT[mode]}:
            assert secret not in log, (mode, secret)
        checked += 1
    if checked < len(MODES):
        pytest.skip("needs the tests above in the same run")


def test_auth_disabled_says_so_loudly(servers: Servers, route: Route) -> None:
    server = servers.get("disabled", AUTH_DISABLED="1")

    assert post(server).status_code == 202
    warnings = [
        json.loads(line)
        for line in servers.log("disabled").splitlines()
        if "AUTHENTICATION IS DISABLED" in line
    ]
    assert warnings
    assert warnings[0]["severity"] == "WARNING"
    assert len(route.messages()) == 1


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, "AUTH_MODE is not set", id="nothing-configured"),
        pytest.param({"AUTH_MODE": "bearer"}, "AUTH_SECRETS is not set", id="no-secrets"),
        pytest.param({"AUTH_MODE": "hmac", "AUTH_SECRETS": "x"}, "AUTH_MODE: must", id="bad-mode"),
        pytest.param(
            {"AUTH_MODE": "basic", "AUTH_SECRETS": "no-colon-secret-6b"},
            "not a user:password pair",
            id="basic-without-user",
        ),
        pytest.param(
            {"AUTH_DISABLED": "1", "K_SERVICE": "vm-isolate"},
            "not Cloud Run",
            id="disabled-on-cloud-run",
        ),
    ],
)
def test_a_function_without_usable_authentication_refuses_to_start(
    broker: BrokerNode, route: Route, tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    environment = function_env(broker, route.exchange, **env)
    if "AUTH_DISABLED" not in env:
        del environment["AUTH_DISABLED"]
    log = tmp_path / "start.log"
    server = FunctionProcess("vm_isolate", free_port(), environment, log_path=log)

    with pytest.raises(RuntimeError, match="exited"):
        server.start(wait=30)

    output = log.read_text()
    assert expected in output
    assert "no-colon-secret-6b" not in output
