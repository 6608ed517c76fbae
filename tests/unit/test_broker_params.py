"""Broker settings become pika parameters only when they are safe: TLS, a valid URL, bounds."""

from __future__ import annotations

import ssl

import pytest
import trustme

from shared.broker_params import connection_parameters
from shared.config import Settings
from shared.errors import ConfigError, SecretUnavailableError
from shared.problems import problem_response


def test_plaintext_is_refused_on_cloud_run_even_with_the_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMQP_URL", "amqp://relay:pw@broker:5672/")
    monkeypatch.setenv("AMQP_ALLOW_PLAINTEXT", "1")
    monkeypatch.setenv("K_SERVICE", "vm-isolate")

    with pytest.raises(ConfigError, match="AMQP_ALLOW_PLAINTEXT"):
        connection_parameters(Settings.from_env())


def test_plaintext_with_the_switch_works_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_URL", "amqp://relay:pw@broker:5672/")
    monkeypatch.setenv("AMQP_ALLOW_PLAINTEXT", "1")
    monkeypatch.setenv("AMQP_PUBLISH_TIMEOUT", "20")

    [params] = connection_parameters(Settings.from_env())

    assert params.ssl_options is None
    # A connection blocked by an alarm is eventually given up and opened anew.
    assert params.blocked_connection_timeout == 40


@pytest.mark.parametrize(
    "url", ["amqps://relay:s3cret@broker:notaport/", "amqps://relay:s3cret@[::1/"]
)
def test_a_malformed_url_is_a_config_error_that_does_not_quote_it(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("AMQP_URL", url)

    with pytest.raises(ConfigError) as raised:
        connection_parameters(Settings.from_env())

    assert "s3cret" not in str(raised.value)
    assert raised.value.__cause__ is None


def test_a_503_tells_the_caller_nothing_internal() -> None:
    error = SecretUnavailableError("cannot access AUTH_SECRETS_SECRET (projects/p/secrets/s)")

    body = problem_response(error).body

    assert b"projects/p" not in body
    assert b"AUTH_SECRETS" not in body
    assert b"could not be read" in body


def test_amqps_urls_use_only_our_ca_and_the_tls_port(monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    client = ca.issue_cert("relay")
    monkeypatch.setenv(
        "AMQP_URL", "amqps://relay:pw@broker.example/%2F, amqps://b2.example:6671/ops"
    )
    monkeypatch.setenv("AMQP_CA_CERT", ca.cert_pem.bytes().decode())
    monkeypatch.setenv("AMQP_CLIENT_CERT", client.cert_chain_pems[0].bytes().decode())
    monkeypatch.setenv("AMQP_CLIENT_KEY", client.private_key_pem.bytes().decode())

    first, second = connection_parameters(Settings.from_env())

    assert (first.host, first.port, first.virtual_host) == ("broker.example", 5671, "/")
    assert (second.host, second.port, second.virtual_host) == ("b2.example", 6671, "ops")
    assert [p.ssl_options.server_hostname for p in (first, second)] == [
        "broker.example",
        "b2.example",
    ]
    # Our CA alone: the system's bundle is never loaded (nor trusted) for the broker.
    assert len(first.ssl_options.context.get_ca_certs()) == 1
    assert first.ssl_options.context.verify_mode == ssl.CERT_REQUIRED
