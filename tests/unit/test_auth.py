"""shared.auth: every AUTH_MODE accepts the right caller and turns everyone else away with a 401."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.datastructures import Headers, QueryParams

from shared.auth import (
    BASIC_CHALLENGE,
    BEARER_CHALLENGE,
    HMAC_CHALLENGE,
    Authenticator,
    Fields,
    authenticator_for,
)
from shared.config import Settings
from shared.errors import AuthenticationError, ConfigError, SecretUnavailableError

BODY = b'{"status": "firing", "alerts": [{"labels": {"instance": "h\xc3\xb4te"}}]}'
TOKEN, OTHER_TOKEN = "s3cret-token-1", "s3cret-token-2"
WHSEC = "whsec_" + base64.b64encode(b"standard-webhooks-key-0123456789").decode()
WHSEC_2 = "whsec_" + base64.b64encode(b"the-next-key-after-rotation-abcd").decode()
GRAFANA_KEY = "grafana-hmac-secret"
NO_QUERY: dict[str, str] = {}


def make(monkeypatch: pytest.MonkeyPatch, mode: str, secret: str, **env: str) -> Authenticator:
    monkeypatch.setenv("AUTH_MODE", mode)
    monkeypatch.setenv("AUTH_SECRETS", secret)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return authenticator_for(Settings.from_env())


def verify(auth: Authenticator, headers: Fields, query: Fields, body: bytes) -> str | None:
    """What the pipeline awaits, from a test's plain code."""
    return asyncio.run(auth.verify(headers, query, body))


def rejected(
    auth: Authenticator, headers: Fields, query: Fields = NO_QUERY, body: bytes = BODY
) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as info:
        verify(auth, headers, query, body)
    assert info.value.status == 401
    assert str(info.value) == "Missing or invalid credentials."
    return info.value


def basic(pair: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def signed(
    secret: str = WHSEC,
    body: bytes = BODY,
    msg_id: str = "msg_2KWPBgLlAfxdpx2AI54pPJ85",
    at: float | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers, signed by the reference library."""
    when = datetime.fromtimestamp(int(time.time() if at is None else at), tz=UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, body.decode()),
    }


def grafana(
    body: bytes = BODY,
    key: str = GRAFANA_KEY,
    timestamp: str | None = None,
    header: str = "x-grafana-alerting-signature-timestamp",
) -> dict[str, str]:
    signed_bytes = body if timestamp is None else f"{timestamp}:".encode() + body
    headers = {
        "x-grafana-alerting-signature": hmac.new(
            key.encode(), signed_bytes, hashlib.sha256
        ).hexdigest()
    }
    if timestamp is not None:
        headers[header] = timestamp
    return headers


# --- bearer ------------------------------------------------------------------------------


def test_bearer_accepts_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "bearer", TOKEN)
    assert verify(auth, {"authorization": f"Bearer {TOKEN}"}, NO_QUERY, BODY) is None
    assert verify(auth, Headers({"Authorization": f"bearer  {TOKEN}"}), NO_QUERY, BODY) is None


def test_bearer_rejects_missing_wrong_and_other_schemes(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "bearer", TOKEN)
    assert rejected(auth, {}).reason == "missing Authorization header"
    assert rejected(auth, {"authorization": "Bearer nope"}).reason == "token mismatch"
    assert rejected(auth, {"authorization": "Bearer "}).reason == "empty Bearer credentials"
    assert rejected(auth, {"authorization": f"Token {TOKEN}"}).challenge == BEARER_CHALLENGE


def test_bearer_rotation_accepts_either_token(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "bearer", f"{TOKEN},\n {OTHER_TOKEN}\n")
    verify(auth, {"authorization": f"Bearer {TOKEN}"}, NO_QUERY, BODY)
    verify(auth, {"authorization": f"Bearer {OTHER_TOKEN}"}, NO_QUERY, BODY)


def rotating(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: str, secret: str) -> Path:
    """AUTH_SECRETS in a file, read again on every request (as a mounted secret is, once
    SECRETS_CACHE_SECONDS have passed): rotate it by writing the file."""
    path = tmp_path / "auth-secrets"
    path.write_text(secret)
    monkeypatch.setenv("AUTH_MODE", mode)
    monkeypatch.setenv("AUTH_SECRETS_FILE", str(path))
    monkeypatch.setenv("SECRETS_CACHE_SECONDS", "0")
    return path


def test_a_rotated_secret_takes_effect_without_restart(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = rotating(monkeypatch, tmp_path, "bearer", TOKEN)
    auth = authenticator_for(Settings.from_env())
    secret.write_text(OTHER_TOKEN)
    verify(auth, {"authorization": f"Bearer {OTHER_TOKEN}"}, NO_QUERY, BODY)
    rejected(auth, {"authorization": f"Bearer {TOKEN}"})


def test_bearer_non_ascii_token_arrives_as_utf8(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "bearer", "jeton-été")
    wire = Headers(raw=[(b"authorization", "Bearer jeton-été".encode())])  # decoded as latin-1
    verify(auth, wire, NO_QUERY, BODY)
    rejected(auth, Headers(raw=[(b"authorization", "Bearer jeton-\xe9t\xe9".encode("latin-1"))]))


def test_an_unusable_secret_after_start_is_a_503(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = rotating(monkeypatch, tmp_path, "basic", "user:pw")
    auth = authenticator_for(Settings.from_env())
    secret.write_text(" , ")
    with pytest.raises(SecretUnavailableError):
        verify(auth, basic("user:pw"), NO_QUERY, BODY)


# --- basic -------------------------------------------------------------------------------


def test_basic_accepts_a_pair_and_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "basic", "alertmanager:old-pw\ngrafana:pä:ss")
    assert verify(auth, basic("alertmanager:old-pw"), NO_QUERY, BODY) is None
    verify(auth, basic("grafana:pä:ss"), NO_QUERY, BODY)


def test_basic_rejects_missing_and_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "basic", "user:pw")
    assert rejected(auth, {}).challenge == BASIC_CHALLENGE
    assert rejected(auth, basic("user:PW")).reason == "user or password mismatch"
    assert rejected(auth, basic("other:pw")).reason == "user or password mismatch"
    assert rejected(auth, {"authorization": "Bearer user:pw"}).reason.startswith("Authorization")


@pytest.mark.parametrize(
    "value", ["Basic !!!notbase64", "Basic dXNlcnB3", "Basic dXNlcjpwdw", "Basic ÿÿÿ", "Basic"]
)
def test_basic_malformed_header_is_a_401(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    auth = make(monkeypatch, "basic", "user:pw")
    rejected(auth, {"authorization": value})


def test_basic_secrets_must_be_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="entry 2 is not a user:password pair"):
        make(monkeypatch, "basic", "user:pw,just-a-password")


# --- query-token -------------------------------------------------------------------------


def test_query_token(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "query-token", f"{TOKEN},{OTHER_TOKEN}")
    assert verify(auth, {}, {"token": TOKEN}, BODY) is None
    verify(auth, {}, QueryParams(f"a=1&token={OTHER_TOKEN}"), BODY)
    assert rejected(auth, {}, {}).reason == "missing token query parameter"
    assert rejected(auth, {}, {"token": "nope"}).challenge == BEARER_CHALLENGE
    rejected(auth, {"authorization": f"Bearer {TOKEN}"}, {})


# --- standard-webhooks -------------------------------------------------------------------


def test_standard_webhooks_accepts_the_library_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "standard-webhooks", WHSEC)
    assert verify(auth, signed(msg_id="msg_abc"), NO_QUERY, BODY) == "msg_abc"
    assert verify(auth, Headers(signed()), NO_QUERY, BODY) == "msg_2KWPBgLlAfxdpx2AI54pPJ85"


def test_standard_webhooks_accepts_a_raw_base64_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "standard-webhooks", WHSEC.removeprefix("whsec_").rstrip("="))
    verify(auth, signed(), NO_QUERY, BODY)


def test_standard_webhooks_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "standard-webhooks", f"{WHSEC}\n{WHSEC_2}")
    verify(auth, signed(WHSEC_2), NO_QUERY, BODY)


def test_standard_webhooks_one_valid_signature_among_several(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth = make(monkeypatch, "standard-webhooks", WHSEC)
    headers = signed()
    wrong = signed(WHSEC_2)["webhook-signature"]
    headers["webhook-signature"] = f"v2,abc nocomma v1,!!! {wrong} {headers['webhook-signature']}"
    verify(auth, headers, NO_QUERY, BODY)


def test_standard_webhooks_rejects(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "standard-webhooks", WHSEC)
    assert rejected(auth, {}).challenge == HMAC_CHALLENGE
    assert rejected(auth, signed(WHSEC_2)).reason == "signature mismatch"
    assert rejected(auth, signed(), body=BODY + b" ").reason == "signature mismatch"
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        headers = signed()
        del headers[name]
        rejected(auth, headers)


def test_standard_webhooks_entry_without_comma_is_a_401(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "standard-webhooks", WHSEC)
    headers = {**signed(), "webhook-signature": "v1" + signed()["webhook-signature"][3:]}
    # The reference library crashed on it before 1.3 (ValueError: not enough values to unpack)
    # and refuses it since; ours refuses it as a mismatch, whatever the library's version.
    with pytest.raises((ValueError, WebhookVerificationError)):
        Webhook(WHSEC).verify(BODY, headers)
    assert rejected(auth, headers).reason == "signature mismatch"


@pytest.mark.parametrize("msg_id", ["x" * 256, "msg\n1", "msg 1", "msg\x001", "msg_é"])
def test_standard_webhooks_bounds_the_id(monkeypatch: pytest.MonkeyPatch, msg_id: str) -> None:
    auth = make(monkeypatch, "standard-webhooks", WHSEC)
    assert rejected(auth, signed(msg_id=msg_id)).reason == "invalid webhook-id"
    assert verify(auth, signed(msg_id="x" * 255), NO_QUERY, BODY) == "x" * 255


def test_standard_webhooks_replay_window(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "standard-webhooks", WHSEC)
    now = time.time()
    assert rejected(auth, signed(at=now - 400)).reason == "timestamp outside tolerance"
    assert rejected(auth, signed(at=now + 400)).reason == "timestamp outside tolerance"
    verify(auth, signed(at=now - 200), NO_QUERY, BODY)
    headers = {**signed(), "webhook-timestamp": "1.7e9"}
    assert rejected(auth, headers).reason == "invalid timestamp"


def test_standard_webhooks_custom_tolerance(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "standard-webhooks", WHSEC, AUTH_TOLERANCE_SECONDS="30")
    assert rejected(auth, signed(at=time.time() - 60)).reason == "timestamp outside tolerance"
    auth = make(monkeypatch, "standard-webhooks", WHSEC, AUTH_TOLERANCE_SECONDS="3600")
    verify(auth, signed(at=time.time() - 1800), NO_QUERY, BODY)


def test_standard_webhooks_secret_must_be_base64(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="entry 1 is not whsec_<base64>"):
        make(monkeypatch, "standard-webhooks", "whsec_not*base64")


# --- grafana-hmac ------------------------------------------------------------------------


def test_grafana_without_timestamp(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "grafana-hmac", f"old,{GRAFANA_KEY}")
    assert verify(auth, grafana(), NO_QUERY, BODY) is None
    upper = {k: v.upper() for k, v in grafana().items()}
    verify(auth, Headers(upper), NO_QUERY, BODY)
    assert rejected(auth, grafana(key="old-ish")).reason == "signature mismatch"
    assert rejected(auth, grafana(), body=b"{}").reason == "signature mismatch"
    assert rejected(auth, {}).challenge == HMAC_CHALLENGE


def test_grafana_with_timestamp(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "grafana-hmac", GRAFANA_KEY)
    now = int(time.time())
    verify(auth, grafana(timestamp=str(now)), NO_QUERY, BODY)
    old = grafana(timestamp=str(now - 301))
    assert rejected(auth, old).reason == "timestamp outside tolerance"
    moved = {**grafana(timestamp=str(now)), "x-grafana-alerting-signature-timestamp": str(now - 1)}
    assert rejected(auth, moved).reason == "signature mismatch"


def test_grafana_configured_timestamp_header_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "grafana-hmac", GRAFANA_KEY, AUTH_TIMESTAMP_HEADER="X-Sent-At")
    now = str(int(time.time()))
    verify(auth, grafana(timestamp=now, header="x-sent-at"), NO_QUERY, BODY)
    assert rejected(auth, grafana()).reason == "missing timestamp header"


def test_grafana_custom_tolerance(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(monkeypatch, "grafana-hmac", GRAFANA_KEY, AUTH_TOLERANCE_SECONDS="10")
    old = grafana(timestamp=str(int(time.time()) - 20))
    assert rejected(auth, old).reason == "timestamp outside tolerance"


# --- settings ----------------------------------------------------------------------------


def test_disabled_lets_everything_through_loudly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AUTH_DISABLED", "1")
    with caplog.at_level(logging.WARNING, logger="event_relay.auth"):
        auth = authenticator_for(Settings.from_env())
    assert verify(auth, {}, {}, b"") is None
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "AUTHENTICATION IS DISABLED" in record.getMessage()
    assert "local development only" in record.getMessage()


def test_disabled_is_refused_on_cloud_run() -> None:
    with pytest.raises(ConfigError, match="local development only"):
        authenticator_for(Settings.from_env({"AUTH_DISABLED": "1", "K_SERVICE": "event-relay"}))


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "AUTH_MODE is not set"),
        ({"AUTH_DISABLED": "0"}, "AUTH_MODE is not set"),
        ({"AUTH_MODE": "hmac"}, "AUTH_MODE: must be one of bearer, basic"),
        ({"AUTH_DISABLED": "true"}, "AUTH_DISABLED: must be 1"),
        ({"AUTH_MODE": "bearer"}, "AUTH_SECRETS is not set"),
        ({"AUTH_MODE": "bearer", "AUTH_TOLERANCE_SECONDS": "5m"}, "AUTH_TOLERANCE_SECONDS"),
        ({"AUTH_MODE": "bearer", "AUTH_TOLERANCE_SECONDS": "0"}, "AUTH_TOLERANCE_SECONDS"),
    ],
)
def test_settings_that_cannot_work_stop_the_start(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        authenticator_for(Settings.from_env(environ))


def test_secrets_without_a_secret_stop_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="AUTH_SECRETS holds no secret"):
        make(monkeypatch, "bearer", " ,\n , ")


CASES = [
    ("bearer", TOKEN, {"authorization": f"Bearer {TOKEN}x"}, {}),
    ("basic", f"user:{TOKEN}", basic(f"user:{TOKEN}x"), {}),
    ("basic", f"user:{TOKEN}", {"authorization": f"Basic {TOKEN}"}, {}),
    ("query-token", TOKEN, {}, {"token": TOKEN[:-1]}),
    ("standard-webhooks", WHSEC, signed(WHSEC_2), {}),
    ("grafana-hmac", GRAFANA_KEY, grafana(key=GRAFANA_KEY + "x"), {}),
]


@pytest.mark.parametrize(("mode", "secret", "headers", "query"), CASES)
def test_no_credential_in_the_error(
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    secret: str,
    headers: dict[str, str],
    query: dict[str, str],
) -> None:
    error = rejected(make(monkeypatch, mode, secret), headers, query)
    sent = [*headers.values(), *query.values()]
    for text in (str(error), error.reason, error.challenge, repr(error.args)):
        assert secret not in text
        assert TOKEN not in text
        assert not any(value in text for value in sent)
