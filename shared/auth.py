"""Authenticate every caller: one Authenticator for AUTH_MODE, built once at start.

The settings (shared.config): AUTH_MODE, AUTH_SECRETS (tokens, user:password pairs or signing
secrets; read again through shared.secrets as it rotates, so no restart is needed),
AUTH_TOLERANCE_SECONDS, AUTH_TIMESTAMP_HEADER and AUTH_DISABLED (local development only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from shared import secrets
from shared.config import SecretSource, Settings
from shared.errors import AuthenticationError, ConfigError, SecretUnavailableError
from shared.vocabulary import WEBHOOK_ID_PATTERN

BEARER_CHALLENGE = 'Bearer realm="event-relay"'
BASIC_CHALLENGE = 'Basic realm="event-relay", charset="UTF-8"'
HMAC_CHALLENGE = 'HMAC realm="event-relay"'
GRAFANA_SIGNATURE_HEADER = "x-grafana-alerting-signature"
GRAFANA_TIMESTAMP_HEADER = "x-grafana-alerting-signature-timestamp"
QUERY_PARAMETER = "token"

_log = logging.getLogger("event_relay.auth")
_WEBHOOK_ID = re.compile(WEBHOOK_ID_PATTERN)
_TIMESTAMP = re.compile(r"[0-9]{1,12}")

Fields = Mapping[str, str]
Keys = tuple[bytes, ...]


class Authenticator(Protocol):
    async def verify(self, headers: Fields, query: Fields, body: bytes) -> str | None:
        """Raise AuthenticationError unless the caller is authenticated; return the sender's
        delivery id (standard-webhooks' webhook-id), else None."""


def authenticator_for(settings: Settings) -> Authenticator:
    """The authenticator AUTH_MODE names; ConfigError when the settings cannot work."""
    if settings.auth_disabled:
        _log.warning(
            "AUTHENTICATION IS DISABLED (AUTH_DISABLED=1): every request is accepted. "
            "This is for local development only."
        )
        return _Disabled()
    source = settings.auth_secrets
    match settings.auth_mode:
        case None:
            raise ConfigError("AUTH_MODE is not set (AUTH_DISABLED=1 for local development only)")
        case _ if source is None:
            raise ConfigError("AUTH_SECRETS is not set")
        case "bearer":
            return _Bearer(source)
        case "basic":
            return _Basic(source)
        case "query-token":
            return _QueryToken(source)
        case "standard-webhooks":
            return _StandardWebhooks(source, settings.auth_tolerance_seconds)
        case "grafana-hmac":
            header = settings.auth_timestamp_header
            return _GrafanaHmac(
                source,
                settings.auth_tolerance_seconds,
                header or GRAFANA_TIMESTAMP_HEADER,
                bool(header),
            )


class _Disabled:
    async def verify(self, headers: Fields, query: Fields, body: bytes) -> None:
        return None


class _SecretAuthenticator:
    """Checks callers against AUTH_SECRETS, read through shared.secrets on every request (it
    caches and refreshes in the background): a rotation needs no restart."""

    challenge = BEARER_CHALLENGE

    def __init__(self, source: SecretSource) -> None:
        self._source = source
        self._parsed: tuple[str, Keys] = ("", ())
        self._keys(secrets.read(source))  # a missing or unusable AUTH_SECRETS stops the start

    async def verify(self, headers: Fields, query: Fields, body: bytes) -> str | None:
        raw = await secrets.current(self._source)
        try:
            keys = self._keys(raw)
        except ConfigError as exc:  # rotated to something unusable: ours to fix, senders retry
            raise SecretUnavailableError("AUTH_SECRETS is unusable") from exc
        return self._check(headers, query, body, keys)

    def _keys(self, raw: str) -> Keys:
        if raw != self._parsed[0]:
            entries = [s.strip() for s in re.split(r"[,\n]", raw) if s.strip()]
            if not entries:
                raise ConfigError("AUTH_SECRETS holds no secret")
            self._parsed = (raw, tuple(self._key(n, s) for n, s in enumerate(entries, 1)))
        return self._parsed[1]

    def _key(self, number: int, secret: str) -> bytes:
        """What is kept of one secret: its digest, so a comparison does not reveal its length."""
        return _digest(secret.encode())

    def _check(self, headers: Fields, query: Fields, body: bytes, keys: Keys) -> str | None:
        raise NotImplementedError

    def _reject(self, reason: str) -> AuthenticationError:
        return AuthenticationError(reason, challenge=self.challenge)

    def _credentials(self, headers: Fields, scheme: str) -> bytes:
        value = headers.get("authorization")
        if not value:
            raise self._reject("missing Authorization header")
        given, _, credentials = value.strip().partition(" ")
        if given.lower() != scheme.lower():
            raise self._reject(f"Authorization scheme is not {scheme}")
        if not credentials.strip():
            raise self._reject(f"empty {scheme} credentials")
        return _raw(credentials.strip())


class _Bearer(_SecretAuthenticator):
    def _check(self, headers: Fields, query: Fields, body: bytes, keys: Keys) -> None:
        if not _any_equal([_digest(self._credentials(headers, "Bearer"))], keys):
            raise self._reject("token mismatch")


class _Basic(_SecretAuthenticator):
    challenge = BASIC_CHALLENGE

    def _key(self, number: int, secret: str) -> bytes:
        if ":" not in secret:
            raise ConfigError(f"AUTH_SECRETS entry {number} is not a user:password pair")
        return _digest(secret.encode())

    def _check(self, headers: Fields, query: Fields, body: bytes, keys: Keys) -> None:
        try:
            pair = base64.b64decode(self._credentials(headers, "Basic"), validate=True)
        except ValueError:  # binascii.Error included
            raise self._reject("malformed Basic credentials") from None
        if b":" not in pair:
            raise self._reject("malformed Basic credentials")
        if not _any_equal([_digest(pair)], keys):
            raise self._reject("user or password mismatch")


class _QueryToken(_SecretAuthenticator):
    # No scheme names a token in the URL, yet a 401 needs a challenge: RFC 6750 calls such a
    # token (its access_token parameter) a bearer token, so the challenge says Bearer.
    def _check(self, headers: Fields, query: Fields, body: bytes, keys: Keys) -> None:
        token = query.get(QUERY_PARAMETER)
        if not token:
            raise self._reject("missing token query parameter")
        if not _any_equal([_digest(token.encode())], keys):
            raise self._reject("token mismatch")


class _Signed(_SecretAuthenticator):
    challenge = HMAC_CHALLENGE

    def __init__(self, source: SecretSource, tolerance: int) -> None:
        self._tolerance = tolerance
        super().__init__(source)

    def _key(self, number: int, secret: str) -> bytes:
        return secret.encode()

    def _check_timestamp(self, value: str) -> None:
        if not _TIMESTAMP.fullmatch(value):
            raise self._reject("invalid timestamp")
        if abs(time.time() - int(value)) > self._tolerance:
            raise self._reject("timestamp outside tolerance")


class _StandardWebhooks(_Signed):
    """https://www.standardwebhooks.com; each secret is whsec_<base64> or the bare base64."""

    def _key(self, number: int, secret: str) -> bytes:
        encoded = secret.removeprefix("whsec_")
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except ValueError:
            raise ConfigError(f"AUTH_SECRETS entry {number} is not whsec_<base64>") from None
        if not key:
            raise ConfigError(f"AUTH_SECRETS entry {number} is empty")
        return key

    def _check(self, headers: Fields, query: Fields, body: bytes, keys: Keys) -> str:
        msg_id, timestamp = headers.get("webhook-id"), headers.get("webhook-timestamp")
        signatures = headers.get("webhook-signature")
        if not (msg_id and timestamp and signatures):
            raise self._reject("missing webhook-id, webhook-timestamp or webhook-signature")
        if not _WEBHOOK_ID.fullmatch(msg_id):
            raise self._reject("invalid webhook-id")
        self._check_timestamp(timestamp)
        signed = f"{msg_id}.{timestamp}.".encode() + body
        expected = [hmac.digest(key, signed, "sha256") for key in keys]
        if not _any_equal(_v1_signatures(signatures), expected):
            raise self._reject("signature mismatch")
        return msg_id


class _GrafanaHmac(_Signed):
    """Grafana's contact point "HMAC Signature": hex HMAC-SHA256 of the body or timestamp:body."""

    def __init__(
        self, source: SecretSource, tolerance: int, timestamp_header: str, required: bool
    ) -> None:
        self._timestamp_header, self._required = timestamp_header, required
        super().__init__(source, tolerance)

    def _check(self, headers: Fields, query: Fields, body: bytes, keys: Keys) -> None:
        signature = headers.get(GRAFANA_SIGNATURE_HEADER)
        if not signature:
            raise self._reject("missing X-Grafana-Alerting-Signature header")
        timestamp = headers.get(self._timestamp_header)
        if timestamp:
            self._check_timestamp(timestamp)
            body = timestamp.encode() + b":" + body
        elif self._required:
            raise self._reject("missing timestamp header")
        expected = [hmac.new(key, body, hashlib.sha256).hexdigest().encode() for key in keys]
        if not _any_equal([_raw(signature.strip().lower())], expected):
            raise self._reject("signature mismatch")


def _v1_signatures(header: str) -> list[bytes]:
    """The decoded v1 signatures of a webhook-signature header; malformed entries are skipped."""
    found = []
    for entry in header.split():
        version, _, signature = entry.partition(",")
        if version == "v1":
            try:
                found.append(base64.b64decode(signature, validate=True))
            except ValueError:
                continue
    return found


def _any_equal(given: Iterable[bytes], expected: Sequence[bytes]) -> bool:
    """Whether any given value equals any expected one, comparing every pair in constant time."""
    results = [hmac.compare_digest(g, e) for g in given for e in expected]
    return any(results)


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _raw(value: str) -> bytes:
    """The bytes a header value arrived as (Starlette decodes them as latin-1)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode()
