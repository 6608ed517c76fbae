"""Read secret settings (`shared.config.SecretSource`): a value, a file or Secret Manager.

File and Secret Manager values are cached for SECRETS_CACHE_SECONDS, so a rotated secret (a new
`latest` version, a re-mounted file) takes effect without a redeploy. When a refresh fails, the
previous value is kept (a WARNING is logged) and read again after at most RETRY_SECONDS (30 s);
a first read that fails raises, and caches nothing. Values are returned exactly as stored (no
newline stripped), decoded as UTF-8.

Two ways to read:
- `read(source)` blocks: for start-up checks, command lines and worker threads;
- `await current(source)` on the event loop never waits for a refresh: an expired value is
  served while a new read runs in a thread, so a slow Secret Manager stalls no request. Only
  a value never read (or the cache turned off) is waited for, in a thread too.

The Google client library (grpc, google.api_core) is imported only when a `NAME_SECRET` setting
is first read, so functions that never use Secret Manager do not pay its import cost (~150 ms).
One Secret Manager access lasts at most 5 s (`_DEADLINE`), retries included.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shared.config import SecretSource, settings
from shared.errors import SecretUnavailableError

if TYPE_CHECKING:
    from google.cloud.secretmanager_v1 import SecretManagerServiceClient

RETRY_SECONDS = 30.0  # after a failed refresh, the previous value is kept this long at most
_DEADLINE = 5.0  # seconds for one secret access, retries included

log = logging.getLogger("event_relay.secrets")

_clock = time.monotonic


@dataclass(frozen=True)
class _Cached:
    value: str
    expires: float


_cache: dict[str, _Cached] = {}  # "file:PATH" or a version's name -> its value
_refreshing: set[str] = set()  # keys being read again in the background
_lock = threading.Lock()  # the cache is filled from the event loop and from threads
_clients_lock = threading.Lock()  # held while a client is built: never by the event loop
_clients: dict[tuple[int, str | None], SecretManagerServiceClient] = {}  # (pid, emulator)


def read(source: SecretSource) -> str:
    """The value of `source`, read again (blocking) once its cached value has expired."""
    if source.kind == "value":
        return source.reference
    ttl = settings().secrets_cache_seconds
    with _lock:
        hit = _cache.get(_key(source))
    if ttl > 0 and hit is not None and _clock() < hit.expires:
        return hit.value
    return _load(source, hit, ttl)


async def current(source: SecretSource) -> str:
    """The value of `source` without blocking the event loop: an expired value is served while
    it is read again in a thread; a value never read is awaited (in a thread)."""
    if source.kind == "value":
        return source.reference
    key, ttl = _key(source), settings().secrets_cache_seconds
    with _lock:
        hit = _cache.get(key)
        stale = ttl > 0 and hit is not None and _clock() >= hit.expires
        refresh = stale and key not in _refreshing
        if refresh:
            _refreshing.add(key)
    if refresh:
        asyncio.get_running_loop().run_in_executor(None, _refresh, source)
    if ttl > 0 and hit is not None:
        return hit.value
    return await asyncio.to_thread(read, source)


def clear_cache() -> None:
    """Forget cached values and the Secret Manager clients (tests)."""
    with _lock:
        _cache.clear()
    close_client()


def close_client() -> None:
    """Close the Secret Manager channels; the next read opens a new one. Called after the
    start-up checks, so no gRPC channel is open when the server forks its workers."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.transport.close()  # type: ignore[no-untyped-call]


def _key(source: SecretSource) -> str:
    return f"file:{source.reference}" if source.kind == "file" else source.reference


def _refresh(source: SecretSource) -> None:
    """A background refresh: `_load` keeps the old value when it fails, and says so."""
    key = _key(source)
    try:
        with _lock:
            hit = _cache.get(key)
        _load(source, hit, settings().secrets_cache_seconds)
    except Exception:  # nobody awaits this read: say what went wrong here
        log.exception("secret setting %s: the background refresh failed", source.setting)
    finally:
        with _lock:
            _refreshing.discard(key)


def _load(source: SecretSource, hit: _Cached | None, ttl: float) -> str:
    """Read `source` now; a failed read falls back on `hit` (retried after RETRY_SECONDS)."""
    try:
        value = _read_file(source) if source.kind == "file" else _access(source)
    except SecretUnavailableError as error:
        if ttl <= 0 or hit is None:
            raise  # a first read: nothing to fall back on, nothing cached
        retry = min(ttl, RETRY_SECONDS)
        # The error names the setting and its source, never the value.
        log.warning(
            "secret setting %s: refresh failed, keeping the previous value for %g s: %s",
            source.setting,
            retry,
            error,
        )
        with _lock:
            _cache[_key(source)] = _Cached(hit.value, _clock() + retry)
        return hit.value
    if ttl > 0:
        with _lock:
            _cache[_key(source)] = _Cached(value, _clock() + ttl)
    return value


def _decode(source: SecretSource, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # `from None`: the UnicodeDecodeError holds the secret's bytes.
        raise SecretUnavailableError(f"{source.where} is not valid UTF-8") from None


def _read_file(source: SecretSource) -> str:
    try:
        data = Path(source.reference).read_bytes()
    except OSError as exc:
        raise SecretUnavailableError(f"cannot read {source.where}: {exc.strerror}") from exc
    return _decode(source, data)


def _access(source: SecretSource) -> str:
    import google_crc32c
    from google.api_core.exceptions import GoogleAPIError, RetryError
    from google.api_core.retry import Retry
    from google.auth.exceptions import GoogleAuthError

    try:
        response = _get_client().access_secret_version(
            name=source.reference,
            retry=Retry(initial=0.1, maximum=1.0, timeout=_DEADLINE),
            timeout=_DEADLINE,
        )
    except (GoogleAPIError, GoogleAuthError) as exc:  # GoogleAuthError: no credentials
        reason = type(exc).__name__
        if isinstance(exc, RetryError) and exc.cause is not None:
            reason = f"{type(exc.cause).__name__}, gave up after {_DEADLINE:g} s"
        raise SecretUnavailableError(f"cannot access {source.where}: {reason}") from exc
    payload = response.payload
    if "data_crc32c" in payload and google_crc32c.value(payload.data) != payload.data_crc32c:
        raise SecretUnavailableError(f"{source.where}: CRC32C mismatch, payload corrupted")
    return _decode(source, payload.data)


def _get_client() -> SecretManagerServiceClient:
    """The process's client, created on first use (and again in a forked child)."""
    key = (os.getpid(), settings().secret_manager_emulator_host)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = _new_client(key[1])
        return _clients[key]


def _new_client(emulator: str | None) -> SecretManagerServiceClient:
    from google.cloud.secretmanager_v1 import SecretManagerServiceClient
    from google.cloud.secretmanager_v1.services.secret_manager_service import transports

    if not emulator:
        return SecretManagerServiceClient()
    import grpc

    channel = grpc.insecure_channel(emulator)
    return SecretManagerServiceClient(
        transport=transports.SecretManagerServiceGrpcTransport(channel=channel)
    )
