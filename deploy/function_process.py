"""Run one event function under functions-framework in ASGI mode, as Cloud Run would.

Used by the local run (`nox -s dev`), the tests and the benchmark: one way to start a function.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from deploy import REPO

FUNCTIONS = REPO / "functions"


class FunctionProcess:
    """A functions-framework server for `functions/<name>/main.py` on 127.0.0.1:`port`."""

    def __init__(
        self,
        name: str,
        port: int,
        env: dict[str, str],
        *,
        source_dir: Path | None = None,
        log_path: Path | None = None,
        python: str = sys.executable,
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self._source_dir = source_dir or FUNCTIONS / name
        self.log_path = log_path
        self._python = python
        self._env = env
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            self._python,
            "-m",
            "functions_framework",
            "--target",
            self.name,
            "--source",
            str(self._source_dir / "main.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]

    def start(self, *, wait: float = 30.0) -> FunctionProcess:
        env = {
            **os.environ,
            # The staged bundle carries shared/ beside main.py; in the repo it sits at the root.
            "PYTHONPATH": str(REPO),
            "FUNCTION_USE_ASGI": "1",
            **self._env,
        }
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                self.command(),
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self._source_dir,
            )
        finally:
            if self.log_path:  # the child holds its own copy of the descriptor
                output.close()  # type: ignore[union-attr]
        self._wait_until_serving(wait)
        return self

    def _wait_until_serving(self, wait: float) -> None:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode} at start"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            try:
                # robots.txt is answered by functions-framework itself: up, without an event.
                urllib.request.urlopen(self.url + "robots.txt", timeout=1)  # noqa: S310
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.05)
                continue
            return
        self.stop()
        raise RuntimeError(f"{self.name} did not serve on port {self.port} within {wait:g} s")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, as Cloud Run sends it; SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> FunctionProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
