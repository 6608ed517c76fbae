"""Google's Pub/Sub emulator (from the Google Cloud CLI), for the tests and `nox -s dev`.

    with PubSubEmulator(Path(".dev/pubsub")) as emulator:
        emulator.create_topic("event-relay-spool")         # projects/<project>/topics/...
        env = emulator.client_env()                        # PUBSUB_EMULATOR_HOST for the client

It listens on 127.0.0.1 only, keeps its data in its own folder, runs with a gcloud
configuration of its own (nothing of the developer's gcloud set-up leaks in) and is stopped
with its Java child by process group. The REST helpers speak the emulator's HTTP API.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from deploy.broker import free_port

PROJECT = "event-relay-local"
INSTALL_HINT = (
    "the Pub/Sub emulator needs the Google Cloud CLI with its pubsub-emulator component and "
    "Java: https://cloud.google.com/sdk/docs/install, then `gcloud components install "
    "pubsub-emulator` (Debian: apt-get install google-cloud-cli-pubsub-emulator default-jre)"
)


class EmulatorError(RuntimeError):
    """The emulator is missing, did not start, or refused a request."""


def emulator_missing() -> str | None:
    """Why the emulator cannot run here, or None when it can."""
    if shutil.which("gcloud") is None or shutil.which("java") is None:
        return INSTALL_HINT
    return None


class PubSubEmulator:
    """One emulator process in `base_dir`; `start()` it, `stop()` it, or use `with`."""

    def __init__(self, base_dir: Path, *, project: str = PROJECT) -> None:
        self.base_dir = base_dir.resolve()
        self.project = project
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def client_env(self) -> dict[str, str]:
        """What the Pub/Sub client library needs to use this emulator."""
        return {"PUBSUB_EMULATOR_HOST": self.host}

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    # -- life cycle --

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 60) -> PubSubEmulator:
        if (why := emulator_missing()) is not None:
            raise EmulatorError(why)
        data = self.base_dir / "data"
        config = self.base_dir / "gcloud-config"
        for folder in (data, config):
            folder.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "CLOUDSDK_CONFIG": str(config),
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        }
        env.pop("PUBSUB_EMULATOR_HOST", None)
        with (self.base_dir / "emulator.log").open("ab") as log:
            self._process = subprocess.Popen(
                [
                    "gcloud", "beta", "emulators", "pubsub", "start",
                    f"--host-port={self.host}", f"--data-dir={data}",
                    f"--project={self.project}",
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the Java child stops with it
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmulatorError(
                    f"the Pub/Sub emulator did not start; see {self.base_dir / 'emulator.log'}"
                )
            time.sleep(0.2)
        return self

    def stop(self, grace: float = 10) -> None:
        """SIGTERM to its process group, SIGKILL after `grace`; return once every member is gone
        (the Java child can outlive gcloud's own process for a second or more)."""
        process, self._process = self._process, None
        if process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _group_alive(process):
                time.sleep(0.05)
            if not _group_alive(process):
                return

    def __enter__(self) -> PubSubEmulator:
        return self.start() if self._process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the REST API --

    def create_topic(self, topic: str) -> str:
        """Create the topic (fine if it exists); its full name."""
        self._call("PUT", f"/v1/{self.topic_path(topic)}", {}, ok_if_exists=True)
        return self.topic_path(topic)

    def create_subscription(
        self, subscription: str, topic: str, *, push_endpoint: str | None = None
    ) -> str:
        """A pull subscription, or a push one to `push_endpoint`; its full name."""
        body: dict[str, Any] = {"topic": self.topic_path(topic), "ackDeadlineSeconds": 10}
        if push_endpoint is not None:
            body["pushConfig"] = {"pushEndpoint": push_endpoint}
        name = f"projects/{self.project}/subscriptions/{subscription}"
        self._call("PUT", f"/v1/{name}", body, ok_if_exists=True)
        return name

    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        """Publish one message, as a test's own sender would; its message id."""
        message = {"data": base64.b64encode(data).decode(), "attributes": attributes}
        answer = self._call(
            "POST", f"/v1/{self.topic_path(topic)}:publish", {"messages": [message]}
        )
        return str(answer["messageIds"][0])

    def pull(
        self, subscription: str, *, wait: float = 5, max_messages: int = 100
    ) -> list[dict[str, Any]]:
        """Take (and acknowledge) what a pull subscription holds, waiting up to `wait` s for
        something to arrive: each message with its data decoded to bytes."""
        name = f"projects/{self.project}/subscriptions/{subscription}"
        request = {"maxMessages": max_messages, "returnImmediately": True}
        deadline = time.monotonic() + wait
        while True:
            received = self._call("POST", f"/v1/{name}:pull", request).get("receivedMessages")
            if received or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        received = received or []
        if received:
            ack_ids = [r["ackId"] for r in received]
            self._call("POST", f"/v1/{name}:acknowledge", {"ackIds": ack_ids})
        return [
            {**r["message"], "data": base64.b64decode(r["message"].get("data", ""))}
            for r in received
        ]

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}/", timeout=1):
                return True
        except OSError:
            return False

    def _call(
        self, method: str, path: str, body: dict[str, Any], *, ok_if_exists: bool = False
    ) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://{self.host}{path}",
            data=json.dumps(body).encode(),
            method=method,
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                answer: dict[str, Any] = json.loads(response.read() or b"{}")
                return answer
        except urllib.error.HTTPError as exc:
            if ok_if_exists and exc.code == 409:
                return {}
            raise EmulatorError(f"{method} {path}: {exc.code} {exc.read()[:300]!r}") from exc


def _group_alive(leader: subprocess.Popen[bytes]) -> bool:
    """Whether any process of the leader's group still runs (reaping the leader: a zombie
    would keep the group "alive" for os.killpg)."""
    leader.poll()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == leader.pid and fields[0] != "Z":  # process group, state
            return True
    return False
