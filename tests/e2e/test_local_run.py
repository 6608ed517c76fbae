"""`python -m deploy local` as a developer runs it: curl the printed example, see the message in
the tail, stop it, and find nothing left running."""

from __future__ import annotations

import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import httpx
import pytest

from deploy import REPO
from deploy.broker import free_port, live_pids_of
from deploy.pubsub_emulator import PubSubEmulator


class Output:
    """Lines of a process's stdout, read on a thread so waiting can time out."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)

    def wait_for(self, text: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} within {timeout} s; output:\n{''.join(self.lines)}")


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


# A script or a background job starts its children with SIGINT ignored; Python then never turns
# SIGINT into KeyboardInterrupt unless the program installs a handler itself.
SIGINT_IGNORED = ["sh", "-c", 'trap "" INT; exec "$@"', "sh"]


@pytest.mark.parametrize(
    ("stop_signal", "wrapper"),
    [(signal.SIGINT, []), (signal.SIGTERM, []), (signal.SIGINT, SIGINT_IGNORED)],
    ids=["ctrl-c", "sigterm", "sigint-started-ignored"],
)
def test_the_printed_curl_gets_202_the_tail_shows_it_and_everything_stops(
    tmp_path: Path, stop_signal: signal.Signals, wrapper: list[str]
) -> None:
    if wrapper:  # the start really leaves SIGINT ignored, else this case proves nothing
        probe = "import signal as s; print(s.getsignal(s.SIGINT) is s.SIG_IGN)"
        shown = subprocess.run(
            [*wrapper, sys.executable, "-c", probe], capture_output=True, text=True, check=True
        )
        assert shown.stdout.strip() == "True"
    port = free_port()
    process = subprocess.Popen(
        [*wrapper, sys.executable, "-m", "deploy", "local", "--only", "vm_isolate",
         "--dev-dir", str(tmp_path), "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own group: a failed test can stop the function servers
    )  # fmt: skip
    output = Output(process)
    try:
        curl = shlex.split(output.wait_for("curl ").strip())
        output.wait_for("tailing the queues")
        headers = dict(h.split(": ", 1) for h in curl[curl.index("-H") + 1 :: 2] if ": " in h)
        body = Path(curl[curl.index("--data-binary") + 1].removeprefix("@")).read_bytes()

        response = httpx.post(curl[-1], content=body, headers=headers, timeout=30)

        assert response.status_code == 202, response.text
        output.wait_for(f"id={response.json()['id']}", timeout=30)
        process.send_signal(stop_signal)
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:  # it did not stop: stop what it started, then fail
            os.killpg(process.pid, signal.SIGKILL)
            for pid in live_pids_of(tmp_path / "broker"):
                os.kill(pid, signal.SIGKILL)
    output.wait_for("dev: stopped", timeout=5)
    assert not listening(port)
    assert live_pids_of(tmp_path / "broker") == []


def test_with_the_spool_an_alert_posted_while_the_broker_is_stopped_arrives_once_it_is_back(
    tmp_path: Path,
    pubsub: PubSubEmulator,  # unused but for its skip, saying why, where the emulator is missing
) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy", "local", "--dev-dir", str(tmp_path), "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    output = Output(process)
    try:
        curl = shlex.split(output.wait_for("curl ").strip())
        hint = output.wait_for("the spool is on")
        output.wait_for("tailing the queues")
        ctl = hint.split("`")[1].split()[0]  # the printed broker-ctl, as a developer copies it
        headers = dict(h.split(": ", 1) for h in curl[curl.index("-H") + 1 :: 2] if ": " in h)
        body = Path(curl[curl.index("--data-binary") + 1].removeprefix("@")).read_bytes()

        subprocess.run([ctl, "stop_app"], check=True, capture_output=True, timeout=60)
        spooled = httpx.post(curl[-1], content=body, headers=headers, timeout=30)
        subprocess.run([ctl, "start_app"], check=True, capture_output=True, timeout=60)

        assert spooled.status_code == 202, spooled.text
        assert spooled.json()["delivery"] == "spooled"
        output.wait_for(f"id={spooled.json()['id']}", timeout=90)  # drained, then tailed
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            for pid in live_pids_of(tmp_path / "broker"):
                os.kill(pid, signal.SIGKILL)
    output.wait_for("dev: stopped", timeout=5)
    assert live_pids_of(tmp_path / "broker") == []
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if _is_our_emulator(p, tmp_path)]


def _is_our_emulator(cmdline: Path, dev_dir: Path) -> bool:
    try:
        return str(dev_dir / "pubsub") in cmdline.read_text()
    except OSError:
        return False
