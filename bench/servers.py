"""Server processes of the benchmark: launch, time to the first 2xx, peak memory, stop."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.machine import cpu_seconds, peak_rss_kib, process_tree
from deploy.broker import free_port
from shared.config import Settings


@dataclass(frozen=True)
class ServerSpec:
    """How to start one row's HTTP server; "{port}" in the command is replaced by its port."""

    key: str
    label: str
    command: tuple[str, ...]
    env: dict[str, str]
    cwd: Path
    cold_start: bool = True  # measured for this row
    publishes: bool = True  # False for the hello world: its queue must stay empty
    spooled: bool = False  # it publishes to the spool, not the queue: the spool must hold its 2xx
    loaded: bool = True  # False: a cold start row only, never put under load
    notes: str = ""


class ServerError(RuntimeError):
    """A benchmark server did not start or did not answer 2xx."""


class Server:
    """One running instance of a ServerSpec on a free loopback port."""

    def __init__(self, spec: ServerSpec, log_path: Path) -> None:
        self.spec = spec
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.launched_at = 0.0

    def launch(self) -> None:
        command = [part.replace("{port}", str(self.port)) for part in self.spec.command]
        with self._log_path.open("ab") as log:
            self.launched_at = time.perf_counter()
            self.process = subprocess.Popen(
                command,
                env=self.spec.env,
                cwd=self.spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def first_2xx(self, body: bytes, headers: dict[str, str], timeout: float = 30.0) -> float:
        """POST the event until it gets a 2xx; seconds from launch() to that answer."""
        assert self.process is not None
        deadline = self.launched_at + timeout
        last = "no answer"
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"{self.spec.key}: exited with {self.process.returncode} at start; "
                    f"see {self._log_path}\n{self.log_tail()}"
                )
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            try:
                connection.request("POST", "/", body=body, headers=headers)
                response = connection.getresponse()
                response.read()
            except OSError as exc:  # refused until the server listens
                last = repr(exc)
                time.sleep(0.002)
                continue
            finally:
                connection.close()
            if 200 <= response.status < 300:
                return time.perf_counter() - self.launched_at
            last = f"HTTP {response.status}"
            time.sleep(0.01)
        raise ServerError(
            f"{self.spec.key}: no 2xx within {timeout:g} s ({last})\n{self.log_tail()}"
        )

    def pids(self) -> list[int]:
        """The server's processes: the launched one and its descendants (gunicorn's workers)."""
        return [] if self.process is None else process_tree(self.process.pid)

    def worker_pid(self) -> int:
        """The process serving requests: gunicorn's (single) worker, else the process itself."""
        pids = self.pids()
        return pids[-1] if pids else 0

    def cpu_seconds(self) -> float:
        """User + system CPU of all the server's processes so far."""
        return cpu_seconds(self.pids())

    def peak_rss_kib(self) -> int:
        """Sum of VmHWM over the server's processes (gunicorn master + worker)."""
        return sum(peak_rss_kib(pid) for pid in self.pids())

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self._log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM as Cloud Run sends it; SIGKILL when it does not exit in time."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cold_start(
    spec: ServerSpec, body: bytes, headers: dict[str, str], log_path: Path, *, keep: bool = False
) -> tuple[float, Server | None]:
    """Launch a fresh instance and time it to its first 2xx; stop it unless `keep`."""
    server = Server(spec, log_path)
    server.launch()
    try:
        seconds = server.first_2xx(body, headers)
    except BaseException:
        server.stop()
        raise
    if keep:
        return seconds, server
    server.stop()
    return seconds, None


def process_env(extra: dict[str, str], *, pythonpath: list[Path]) -> dict[str, str]:
    """The orchestrator's environment minus any event-relay or functions-framework setting,
    plus `extra`."""
    ours = set(Settings.variables())
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ours and not name.startswith(("FUNCTION_", "WORKERS"))
    }
    env["PYTHONPATH"] = os.pathsep.join(str(path) for path in pythonpath)
    env.update(extra)
    return env
