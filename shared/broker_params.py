"""Turn the AMQP settings into pika connection parameters: mutual TLS, host name verified."""

from __future__ import annotations

import os
import ssl
import tempfile
from contextlib import suppress
from functools import lru_cache
from urllib.parse import SplitResult, urlsplit

import pika

from shared import secrets
from shared.config import Secret, Settings
from shared.errors import ConfigError

AMQP_PORT, AMQPS_PORT = 5672, 5671
TLS_SETTINGS = ("AMQP_CA_CERT", "AMQP_CLIENT_CERT", "AMQP_CLIENT_KEY")


def broker_urls(settings: Settings) -> list[str]:
    """The broker URLs in failover order: AMQP_URL may list several, comma-separated."""
    raw = _read(settings.amqp_url) or ""
    urls = [url.strip() for url in raw.replace("\n", ",").split(",") if url.strip()]
    if not urls:
        raise ConfigError("AMQP_URL is not set (nor AMQP_URL_FILE or AMQP_URL_SECRET)")
    return urls


def check_scheme(url: str, settings: Settings) -> bool:
    """True for amqps://; amqp:// only with the local-development switch; ConfigError otherwise."""
    scheme = _split(url).scheme
    if scheme == "amqps":
        return True
    if scheme == "amqp" and settings.amqp_allow_plaintext:
        return False  # never on Cloud Run: the settings refuse the switch there
    if scheme == "amqp":
        raise ConfigError(
            "AMQP_URL uses plaintext amqp://; use amqps://, or set AMQP_ALLOW_PLAINTEXT=1 "
            "for local development only"
        )
    raise ConfigError(f"AMQP_URL must start with amqps:// (got {scheme or 'no scheme'}://)")


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # parses the port: raises on a bad one
    except ValueError:  # `from None`: the message may quote the URL, password included
        raise ConfigError("AMQP_URL is not a valid amqps:// URL") from None
    return parts


def connection_parameters(settings: Settings) -> list[pika.ConnectionParameters]:
    """One parameter set per broker URL. It reads the secrets (blocking): call it per
    connection attempt, off the event loop."""
    urls = broker_urls(settings)
    tls = [check_scheme(url, settings) for url in urls]
    context = _tls_context(settings) if any(tls) else None
    result = []
    for url, use_tls in zip(urls, tls, strict=True):
        parts = _split(url)
        try:
            # Parsed as amqp://: for amqps:// pika would build a default TLS context, loading
            # the system's CA bundle (~15 ms of a cold start) only for us to replace it.
            params = pika.URLParameters("amqp" + url[len("amqps") :] if use_tls else url)
        except ValueError:  # `from None`: the message may quote the URL, password included
            raise ConfigError("AMQP_URL is not a valid amqps:// URL") from None
        # The URL's own query options are ignored in favour of ours, so a URL cannot turn TLS off.
        params.ssl_options = None
        params.port = parts.port or (AMQPS_PORT if use_tls else AMQP_PORT)
        if use_tls:
            server_name = settings.amqp_tls_server_name or parts.hostname
            params.ssl_options = pika.SSLOptions(context, server_hostname=server_name)
        params.socket_timeout = settings.amqp_connect_timeout
        params.stack_timeout = settings.amqp_connect_timeout
        params.connection_attempts = 1
        params.heartbeat = settings.amqp_heartbeat
        # A connection blocked by an alarm this long is given up and opened anew: it may have
        # gone half-open meanwhile, and publishes on it are refused at once, never timed out.
        params.blocked_connection_timeout = max(30.0, 2 * settings.amqp_publish_timeout)
        result.append(params)
    return result


def _tls_context(settings: Settings) -> ssl.SSLContext:
    ca, cert, key = (_read(source) for source in settings.broker_secrets[1:])
    if not ca or not cert or not key:
        missing = [n for n, pem in zip(TLS_SETTINGS, (ca, cert, key), strict=True) if not pem]
        raise ConfigError(f"mutual TLS needs {', '.join(missing)} (or its _FILE / _SECRET form)")
    return _context_for(ca, cert, key)


def _read(source: Secret) -> str | None:
    return None if source is None else secrets.read(source)


@lru_cache(maxsize=1)
def _context_for(ca: str, cert: str, key: str) -> ssl.SSLContext:
    """One context per set of PEMs: built at start, reused by every connection until the
    secrets rotate (building one costs ~20 ms of a cold start)."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca)
    except ssl.SSLError as exc:
        raise ConfigError("AMQP_CA_CERT is not a PEM certificate") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_client_certificate(context, cert, key)
    return context


def _load_client_certificate(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """load_cert_chain reads files only: write the PEM to private files, load, and delete them."""
    with tempfile.TemporaryDirectory(prefix="event-relay-tls-") as folder:
        paths = []
        for name, pem in (("client.pem", cert_pem), ("client.key", key_pem)):
            path = os.path.join(folder, name)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(pem)
            paths.append(path)
        try:
            context.load_cert_chain(certfile=paths[0], keyfile=paths[1])
        except ssl.SSLError as exc:
            raise ConfigError(
                "AMQP_CLIENT_CERT and AMQP_CLIENT_KEY do not load as a PEM pair"
            ) from exc
        finally:
            for path in paths:
                with suppress(OSError):
                    os.unlink(path)


def check_broker_settings_at_start(settings: Settings) -> None:
    """Refuse a missing or plaintext AMQP_URL, or unusable TLS files, at start. Settings kept in
    Secret Manager are read by the worker instead: gRPC must not start before the server forks."""
    if any(s is not None and s.kind == "secret-manager" for s in settings.broker_secrets):
        return
    connection_parameters(settings)
