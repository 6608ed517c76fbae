"""Secret settings, each resolved from exactly one source, cached per process for a while.

A secret setting NAME is given by exactly one of these environment variables:

- ``NAME``: the value itself;
- ``NAME_FILE``: the path of a file holding the value (for instance a secret mounted by Cloud Run);
- ``NAME_SECRET``: a Secret Manager secret: ``projects/P/secrets/S/versions/V``,
  ``projects/P/secrets/S`` (version ``latest``), or a short ``S`` / ``S:V`` in the project
  ``GOOGLE_CLOUD_PROJECT`` (version ``latest`` by default).

An empty variable counts as unset. The value is returned exactly as stored (no newline is
stripped), decoded as UTF-8. File and Secret Manager values are cached for
``SECRETS_CACHE_SECONDS``; after that they are read again, so a rotated secret (a new ``latest``
version, a re-mounted file) takes effect without a redeploy. When such a refresh fails, the
previous value is kept (a WARNING is logged) and read again after at most ``RETRY_SECONDS`` (30 s);
a first read that fails raises, and caches nothing.

Other environment variables read:

- ``GOOGLE_CLOUD_PROJECT``: the project of short secret names (Cloud Run does not set it);
- ``SECRETS_CACHE_SECONDS``: how long a value is reused (default 300; ``<= 0`` turns the cache off);
- ``SECRET_MANAGER_EMULATOR_HOST``: ``host:port`` of a Secret Manager fake reached over an
  insecure gRPC channel, **for tests and local runs only**. Unset, the client uses Application
  Default Credentials against the real service.

The Google client library (grpc, google.api_core) is imported only when a ``NAME_SECRET`` setting
is first read, so functions that never use Secret Manager do not pay its import cost (~150 ms).
Reading a secret blocks: one Secret Manager access lasts at most 5 s (``_DEADLINE``), retries
included.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from shared.errors import ConfigError, SecretUnavailableError

if TYPE_CHECKING:
    from google.cloud.secretmanager_v1 import SecretManagerServiceClient

CACHE_SECONDS_ENV = "SECRETS_CACHE_SECONDS"
PROJECT_ENV = "GOOGLE_CLOUD_PROJECT"
EMULATOR_ENV = "SECRET_MANAGER_EMULATOR_HOST"
DEFAULT_CACHE_SECONDS = 300.0
RETRY_SECONDS = 30.0  # after a failed refresh, the previous value is kept this long at most
_DEADLINE = 5.0  # seconds for one secret access, retries included

_FULL = re.compile(r"projects/([^/]+)/secrets/([^/]+)(?:/versions/([^/]+))?")
_SHORT = re.compile(r"([\w-]+)(?::([\w-]+))?", re.ASCII)

log = logging.getLogger("event_relay.secrets")

_clock = time.monotonic
_cache: dict[str, tuple[str, float]] = {}  # "file:PATH" or a version path -> (value, expiry)
_client_lock = threading.Lock()
_client: tuple[int, SecretManagerServiceClient] | None = None  # (pid, client)


def read_secret(name: str) -> str | None:
    """The value of secret setting `name`, or None when none of its three sources is set."""
    sources = {
        var: value
        for var in (name, f"{name}_FILE", f"{name}_SECRET")
        if (value := os.environ.get(var))
    }
    if len(sources) > 1:
        raise ConfigError(f"set only one of {', '.join(sources)} (secret setting {name})")
    if not sources:
        return None
    var, ref = sources.popitem()
    if var == name:
        return ref
    if var.endswith("_FILE"):
        return _cached(name, f"file:{ref}", lambda: _read_file(var, ref))
    path = _version_path(var, ref)
    return _cached(name, path, lambda: _access(var, path))


def clear_cache() -> None:
    """Forget cached values and the Secret Manager client (tests)."""
    _cache.clear()
    close_client()


def close_client() -> None:
    """Close the Secret Manager channel; the next read opens a new one. Called after the
    start-up checks, so no gRPC channel is open when the server forks its workers."""
    global _client
    with _client_lock:
        if _client is not None:
            _client[1].transport.close()  # type: ignore[no-untyped-call]
        _client = None


def _cache_seconds() -> float:
    raw = os.environ.get(CACHE_SECONDS_ENV, "")
    try:
        return float(raw) if raw else DEFAULT_CACHE_SECONDS
    except ValueError:
        raise ConfigError(f"{CACHE_SECONDS_ENV} must be a number of seconds") from None


def _cached(name: str, key: str, load: Callable[[], str]) -> str:
    """The value under `key`, loaded again once expired; a failed reload keeps the old value."""
    ttl = _cache_seconds()
    now = _clock()
    hit = _cache.get(key)
    if ttl > 0 and hit is not None and now < hit[1]:
        return hit[0]
    try:
        value = load()
    except SecretUnavailableError as error:
        if ttl <= 0 or hit is None:
            raise  # a first read: nothing to fall back on, nothing cached
        retry = min(ttl, RETRY_SECONDS)
        # The error names the setting and its source, never the value.
        log.warning(
            "secret setting %s: refresh failed, keeping the previous value for %g s: %s",
            name,
            retry,
            error,
        )
        _cache[key] = (hit[0], now + retry)
        return hit[0]
    if ttl > 0:
        _cache[key] = (value, now + ttl)
    return value


def _decode(var: str, where: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # `from None`: the UnicodeDecodeError holds the secret's bytes.
        raise SecretUnavailableError(f"{var} ({where}) is not valid UTF-8") from None


def _read_file(var: str, path: str) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SecretUnavailableError(f"cannot read {var} ({path}): {exc.strerror}") from exc
    return _decode(var, path, data)


def _version_path(var: str, ref: str) -> str:
    if m := _FULL.fullmatch(ref):
        project, secret, version = m.groups()
    elif m := _SHORT.fullmatch(ref):
        (secret, version), project = m.groups(), os.environ.get(PROJECT_ENV)
        if not project:
            raise ConfigError(f"{var} is a short secret name: set {PROJECT_ENV} or a full path")
    else:
        raise ConfigError(f"{var} must be projects/P/secrets/S[/versions/V] or S[:V]")
    return f"projects/{project}/secrets/{secret}/versions/{version or 'latest'}"


def _access(var: str, path: str) -> str:
    import google_crc32c
    from google.api_core.exceptions import GoogleAPIError, RetryError
    from google.api_core.retry import Retry
    from google.auth.exceptions import GoogleAuthError

    try:
        response = _get_client().access_secret_version(
            name=path, retry=Retry(initial=0.1, maximum=1.0, timeout=_DEADLINE), timeout=_DEADLINE
        )
    except (GoogleAPIError, GoogleAuthError) as exc:  # GoogleAuthError: no credentials
        reason = type(exc).__name__
        if isinstance(exc, RetryError) and exc.cause is not None:
            reason = f"{type(exc.cause).__name__}, gave up after {_DEADLINE:g} s"
        raise SecretUnavailableError(f"cannot access {var} ({path}): {reason}") from exc
    payload = response.payload
    if "data_crc32c" in payload and google_crc32c.value(payload.data) != payload.data_crc32c:
        raise SecretUnavailableError(f"{var} ({path}): CRC32C mismatch, payload corrupted")
    return _decode(var, path, payload.data)


def _get_client() -> SecretManagerServiceClient:
    """The process's client, created on first use (and again in a forked child)."""
    global _client
    with _client_lock:
        if _client is None or _client[0] != os.getpid():
            _client = (os.getpid(), _new_client())
        return _client[1]


def _new_client() -> SecretManagerServiceClient:
    from google.cloud.secretmanager_v1 import SecretManagerServiceClient
    from google.cloud.secretmanager_v1.services.secret_manager_service import transports

    emulator = os.environ.get(EMULATOR_ENV)
    if not emulator:
        return SecretManagerServiceClient()
    import grpc

    channel = grpc.insecure_channel(emulator)
    return SecretManagerServiceClient(
        transport=transports.SecretManagerServiceGrpcTransport(channel=channel)
    )
