"""shared.secrets: value, file or Secret Manager (the real client against an in-process fake)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.auth.exceptions import DefaultCredentialsError

from shared import secrets
from shared.config import secret_source
from shared.errors import ConfigError, SecretUnavailableError
from tests.secret_manager_fake import SecretManagerFake

ROOT = Path(__file__).resolve().parents[2]
SETTING = "DB_PASSWORD"
PROJECT = "test-project"
SECRET = f"projects/{PROJECT}/secrets/db-password"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's own setting is no event-relay one: tests/conftest.py does not clear it."""
    for var in (SETTING, f"{SETTING}_FILE", f"{SETTING}_SECRET"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[SecretManagerFake]:
    with SecretManagerFake(project=PROJECT) as fake:
        monkeypatch.setenv("SECRET_MANAGER_EMULATOR_HOST", fake.address)
        yield fake


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The cache's clock, frozen; move it with clock[0] += seconds."""
    now = [1000.0]
    monkeypatch.setattr(secrets, "_clock", lambda: now[0])
    return now


def read_secret(setting: str) -> str | None:
    """A secret setting as a function reads it: its source from the environment, then its value."""
    source = secret_source(setting, {k: v for k, v in os.environ.items() if v})
    return None if source is None else secrets.read(source)


def unavailable(setting: str = SETTING) -> SecretUnavailableError:
    with pytest.raises(SecretUnavailableError) as info:
        read_secret(setting)
    assert info.value.status == 503
    return info.value


# --- sources ---------------------------------------------------------------------------


def test_none_when_no_source_is_set() -> None:
    assert read_secret(SETTING) is None


def test_value_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SETTING, "hunter2")
    assert read_secret(SETTING) == "hunter2"


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SETTING, "")
    monkeypatch.setenv(f"{SETTING}_SECRET", "db-password")
    monkeypatch.setenv(f"{SETTING}_FILE", "")
    with pytest.raises(ConfigError, match="GOOGLE_CLOUD_PROJECT"):
        read_secret(SETTING)


def test_value_from_file_is_exact(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("hunter2\n")
    monkeypatch.setenv(f"{SETTING}_FILE", str(path))
    assert read_secret(SETTING) == "hunter2\n"


def test_missing_file_names_setting_and_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(f"{SETTING}_FILE", str(tmp_path / "absent"))
    err = unavailable()
    assert f"{SETTING}_FILE" in str(err)
    assert str(tmp_path / "absent") in str(err)


def test_file_not_utf8_hides_the_bytes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_bytes(b"hunter\xff2")
    monkeypatch.setenv(f"{SETTING}_FILE", str(path))
    err = unavailable()
    assert "UTF-8" in str(err)
    assert err.__cause__ is None
    assert err.__suppress_context__


def test_two_sources_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SETTING, "hunter2")
    monkeypatch.setenv(f"{SETTING}_SECRET", "db-password")
    with pytest.raises(ConfigError) as info:
        read_secret(SETTING)
    assert f"{SETTING}, {SETTING}_SECRET" in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "ref", ["projects/p/secrets", "projects/p/secrets/s/versions", "a/b", "s:1:2", "s:"]
)
def test_malformed_secret_reference(monkeypatch: pytest.MonkeyPatch, ref: str) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setenv(f"{SETTING}_SECRET", ref)
    with pytest.raises(ConfigError, match=f"{SETTING}_SECRET"):
        read_secret(SETTING)


# --- Secret Manager ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "served"),
    [
        (f"{SECRET}/versions/1", "v1"),
        (f"{SECRET}/versions/latest", "v2"),
        (SECRET, "v2"),
        ("db-password", "v2"),
        ("db-password:1", "v1"),
        ("db-password:latest", "v2"),
    ],
)
def test_secret_reference_forms(
    fake: SecretManagerFake, monkeypatch: pytest.MonkeyPatch, ref: str, served: str
) -> None:
    fake.set("db-password", "v1")
    fake.set("db-password", "v2")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setenv(f"{SETTING}_SECRET", ref)
    assert read_secret(SETTING) == served


def test_short_name_without_project_is_a_config_error(
    fake: SecretManagerFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.set("db-password", "hunter2")
    monkeypatch.setenv(f"{SETTING}_SECRET", "db-password")
    with pytest.raises(ConfigError, match="GOOGLE_CLOUD_PROJECT"):
        read_secret(SETTING)
    assert fake.access_count == 0


def test_full_path_needs_no_project(
    fake: SecretManagerFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.set("projects/other/secrets/api-key", "k")
    monkeypatch.setenv(f"{SETTING}_SECRET", "projects/other/secrets/api-key")
    assert read_secret(SETTING) == "k"
    assert fake.calls == ["projects/other/secrets/api-key/versions/latest"]


def test_missing_secret_names_setting_and_secret_not_value(
    fake: SecretManagerFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.set("db-password", "hunter2")
    monkeypatch.setenv(f"{SETTING}_SECRET", f"{SECRET}/versions/7")
    err = unavailable()
    message = str(err)
    assert f"{SETTING}_SECRET" in message
    assert f"{SECRET}/versions/7" in message
    assert "NotFound" in message
    assert "hunter2" not in message
    assert isinstance(err.__cause__, gexc.NotFound)


def test_permission_denied_is_not_retried(
    fake: SecretManagerFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.set("db-password", "hunter2")
    fake.fail("db-password", grpc.StatusCode.PERMISSION_DENIED)
    monkeypatch.setenv(f"{SETTING}_SECRET", SECRET)
    err = unavailable()
    assert "PermissionDenied" in str(err)
    assert f"{SECRET}/versions/latest" in str(err)
    assert isinstance(err.__cause__, gexc.PermissionDenied)
    assert fake.access_count == 1


def test_crc_mismatch(fake: SecretManagerFake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.set("db-password", "hunter2")
    fake.corrupt_crc = True
    monkeypatch.setenv(f"{SETTING}_SECRET", SECRET)
    err = unavailable()
    assert "CRC32C" in str(err)
    assert "hunter2" not in str(err)


def test_secret_not_utf8(fake: SecretManagerFake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.set("db-password", b"\xffhunter2")
    monkeypatch.setenv(f"{SETTING}_SECRET", SECRET)
    assert "UTF-8" in str(unavailable())


def test_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_adc(*args: object, **kwargs: object) -> None:
        raise DefaultCredentialsError("no ADC here")  # type: ignore[no-untyped-call]

    monkeypatch.setattr("google.auth.default", no_adc)
    monkeypatch.setenv(f"{SETTING}_SECRET", SECRET)
    assert "DefaultCredentialsError" in str(unavailable())


def test_one_client_per_process(fake: SecretManagerFake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.set("db-password", "a")
    fake.set("api-key", "b")
    monkeypatch.setenv(f"{SETTING}_SECRET", SECRET)
    monkeypatch.setenv("API_KEY_SECRET", f"projects/{PROJECT}/secrets/api-key")
    assert read_secret(SETTING) == "a"
    client = secrets._get_client()
    assert read_secret("API_KEY") == "b"
    assert secrets._get_client() is client


# --- cache -------------------------------------------------------------------------------


def test_rotation_is_served_after_the_ttl(
    fake: SecretManagerFake, monkeypatch: pytest.MonkeyPatch, clock: list[float]
) -> None:
    fake.set("db-password", "old")
    monkeypatch.setenv(f"{SETTING}_SECRET", SECRET)
    assert read_secret(SETTING) == "old"
    fake.set("db-password", "new")
    clock[0] += 299
    assert read_secret(SETTING) == "old"
    assert fake.access_count == 1
    clock[0] += 2
    assert read_secret(SETTING) == "new"
    assert fake.access_count == 2


def test_rotated_file_is_reread_after_the_ttl(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: list[float]
) -> None:
    path = tmp_path / "pw"
    path.write_text("old")
    monkeypatch.setenv(f"{SETTING}_FILE", str(path))
    monkeypatch.setenv("SECRETS_CACHE_SECONDS", "60")
    assert read_secret(SETTING) == "old"
    path.write_text("new")
    assert read_secret(SETTING) == "old"
    clock[0] += 61
    assert read_secret(SETTING) == "new"


def test_failures_are_not_cached(fake: SecretManagerFake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.set("db-password", "hunter2")
    fake.fail("db-password", grpc.StatusCode.PERMISSION_DENIED)
    monkeypatch.setenv(f"{SETTING}_SECRET", SECRET)
    unavailable()
    fake.fail("db-password", None)
    assert read_secret(SETTING) == "hunter2"
    assert read_secret(SETTING) == "hunter2"
    assert fake.access_count == 2


def test_a_failed_refresh_keeps_the_old_value_and_waits_before_trying_again(
    fake: SecretManagerFake,
    monkeypatch: pytest.MonkeyPatch,
    clock: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.set("db-password", "hunter2")
    monkeypatch.setenv(f"{SETTING}_SECRET", SECRET)
    assert read_secret(SETTING) == "hunter2"
    fake.fail("db-password", grpc.StatusCode.PERMISSION_DENIED)  # not retried: one access
    clock[0] += 301

    with caplog.at_level(logging.WARNING, logger="event_relay.secrets"):
        assert read_secret(SETTING) == "hunter2"
    assert fake.access_count == 2
    [record] = [r for r in caplog.records if r.name == "event_relay.secrets"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert SETTING in message
    assert "PermissionDenied" in message
    assert "hunter2" not in message

    clock[0] += secrets.RETRY_SECONDS - 1
    assert read_secret(SETTING) == "hunter2"
    assert fake.access_count == 2  # no new attempt within RETRY_SECONDS
    clock[0] += 1
    assert read_secret(SETTING) == "hunter2"
    assert fake.access_count == 3  # tried again, still failing

    fake.fail("db-password", None)
    fake.set("db-password", "n3w")
    clock[0] += secrets.RETRY_SECONDS
    assert read_secret(SETTING) == "n3w"
    assert fake.access_count == 4
    clock[0] += 299
    assert read_secret(SETTING) == "n3w"  # a full TTL again
    assert fake.access_count == 4


def test_a_failed_refresh_of_a_file_keeps_the_old_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: list[float]
) -> None:
    path = tmp_path / "pw"
    path.write_text("old")
    monkeypatch.setenv(f"{SETTING}_FILE", str(path))
    monkeypatch.setenv("SECRETS_CACHE_SECONDS", "10")
    assert read_secret(SETTING) == "old"
    path.unlink()
    clock[0] += 11
    assert read_secret(SETTING) == "old"
    path.write_text("new")
    clock[0] += 9  # min(ttl, RETRY_SECONDS) = 10
    assert read_secret(SETTING) == "old"
    clock[0] += 1
    assert read_secret(SETTING) == "new"


@pytest.mark.parametrize("seconds", ["0", "-1"])
def test_cache_disabled(
    fake: SecretManagerFake, monkeypatch: pytest.MonkeyPatch, seconds: str
) -> None:
    fake.set("db-password", "hunter2")
    monkeypatch.setenv(f"{SETTING}_SECRET", SECRET)
    monkeypatch.setenv("SECRETS_CACHE_SECONDS", seconds)
    read_secret(SETTING)
    read_secret(SETTING)
    assert fake.access_count == 2


def test_cache_seconds_must_be_a_number(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x")
    monkeypatch.setenv(f"{SETTING}_FILE", str(tmp_path / "pw"))
    monkeypatch.setenv("SECRETS_CACHE_SECONDS", "5m")
    with pytest.raises(ConfigError, match="SECRETS_CACHE_SECONDS"):
        read_secret(SETTING)


# --- costs and deadlines -----------------------------------------------------------------


def test_import_does_not_load_the_google_client() -> None:
    # functions-framework's nspkg .pth registers the empty namespaces `google` and
    # `google.cloud` at interpreter start-up, so look for their sub-packages.
    code = (
        "import shared.secrets, sys; "
        "heavy = ('grpc', 'google.cloud.', 'google.api_core', 'google.protobuf', 'google_crc32c');"
        "loaded = [m for m in sys.modules if m.startswith(heavy)]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=30)


@pytest.mark.slow
def test_dead_endpoint_fails_within_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("SECRET_MANAGER_EMULATOR_HOST", f"127.0.0.1:{port}")
    monkeypatch.setenv(f"{SETTING}_SECRET", SECRET)
    start = time.monotonic()
    err = unavailable()
    elapsed = time.monotonic() - start
    assert elapsed < secrets._DEADLINE + 1
    assert "ServiceUnavailable" in str(err)
