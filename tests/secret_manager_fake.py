"""An in-process Secret Manager: a real gRPC server that answers AccessSecretVersion.

The real client library talks to it over an insecure channel; point `shared.secrets` at it
with ``SECRET_MANAGER_EMULATOR_HOST=fake.address``::

    with SecretManagerFake() as fake:
        fake.set("db-password", "s3cret")            # version 1 of projects/test-project/...
        fake.set("db-password", "n3w")               # version 2, now "latest"
        fake.fail("api-key", grpc.StatusCode.PERMISSION_DENIED)
        monkeypatch.setenv("SECRET_MANAGER_EMULATOR_HOST", fake.address)

Secrets are named by their short name (in `project`), ``projects/P/secrets/S`` or
``projects/P/secrets/S/versions/N`` (which sets that version). ``latest`` is the highest version.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent import futures
from types import TracebackType

import google_crc32c
import grpc
from google.cloud.secretmanager_v1.types import (
    AccessSecretVersionRequest,
    AccessSecretVersionResponse,
    SecretPayload,
)

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"
_NAME = re.compile(r"projects/([^/]+)/secrets/([^/]+)(?:/versions/([^/]+))?")


class SecretManagerFake:
    """A Secret Manager holding versions set by the test; `calls` lists every name accessed."""

    def __init__(self, project: str = "test-project") -> None:
        self.project = project
        self.address = ""
        self.corrupt_crc = False  # True: answer with a wrong data_crc32c
        self.delay = 0.0  # seconds each access takes: a slow Secret Manager
        self.calls: list[str] = []
        self._versions: dict[tuple[str, str], dict[int, bytes]] = {}
        self._failures: dict[tuple[str, str] | None, tuple[grpc.StatusCode, str]] = {}
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None

    # --- the test's side -------------------------------------------------------------

    @property
    def access_count(self) -> int:
        """How many AccessSecretVersion calls arrived (retries included)."""
        return len(self.calls)

    def set(self, secret: str, value: str | bytes, version: int | None = None) -> str:
        """Store a version (the next one by default); returns its full version path."""
        project, secret_id, in_path = self._key(secret)
        data = value.encode() if isinstance(value, str) else value
        with self._lock:
            versions = self._versions.setdefault((project, secret_id), {})
            number = version or (int(in_path) if in_path else max(versions, default=0) + 1)
            versions[number] = data
        return f"projects/{project}/secrets/{secret_id}/versions/{number}"

    def fail(self, secret: str | None, code: grpc.StatusCode | None, details: str = "") -> None:
        """Answer every access to `secret` (None: to any secret) with `code`; None heals it."""
        key = None if secret is None else self._key(secret)[:2]
        with self._lock:
            if code is None:
                self._failures.pop(key, None)
            else:
                self._failures[key] = (code, details or f"fake {code.name}")

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> SecretManagerFake:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.unary_unary_rpc_method_handler(
            self._access,
            request_deserializer=AccessSecretVersionRequest.deserialize,
            response_serializer=AccessSecretVersionResponse.serialize,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"AccessSecretVersion": handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server, self.address = server, f"127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def __enter__(self) -> SecretManagerFake:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- the server's side -------------------------------------------------------------

    def _key(self, secret: str) -> tuple[str, str, str | None]:
        m = _NAME.fullmatch(secret)
        return (m[1], m[2], m[3]) if m else (self.project, secret, None)

    def _access(
        self, request: AccessSecretVersionRequest, context: grpc.ServicerContext
    ) -> AccessSecretVersionResponse:
        with self._lock:
            self.calls.append(request.name)
        time.sleep(self.delay)
        try:
            with self._lock:
                return self._lookup(request.name)
        except _Abort as abort:
            context.abort(abort.code, abort.details)
            raise  # not reached: abort raises

    def _lookup(self, name: str) -> AccessSecretVersionResponse:
        m = _NAME.fullmatch(name)
        if m is None or m[3] is None:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad version name {name!r}")
        project, secret_id, version = m.groups()
        failure = self._failures.get((project, secret_id)) or self._failures.get(None)
        if failure is not None:
            raise _Abort(*failure)
        versions = self._versions.get((project, secret_id), {})
        if version == "latest":
            number = max(versions, default=0)
        else:
            number = int(version) if version.isdigit() else 0
        if number not in versions:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"Secret Version [{name}] not found.")
        data = versions[number]
        crc = (google_crc32c.value(data) + (1 if self.corrupt_crc else 0)) & 0xFFFFFFFF
        return AccessSecretVersionResponse(
            name=f"projects/{project}/secrets/{secret_id}/versions/{number}",
            payload=SecretPayload(data=data, data_crc32c=crc),
        )


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details
