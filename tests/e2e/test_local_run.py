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
from collections.abc import Iterator
from contextlib import contextmanager
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
        """The next line holding `text`."""
        return self.wait_for_each(text, timeout=timeout)[0]

    def wait_for_each(self, *texts: str, timeout: float = 90) -> list[str]:
        """The next line holding each of `texts`, whatever order they come in."""
        found: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            self.lines.append(line)
            found.update((text, line) for text in texts if text in line and text not in found)
            if len(found) == len(texts):
                return [found[text] for text in texts]
        missing = [text for text in texts if text not in found]
        raise AssertionError(f"no {missing} within {timeout} s; output:\n{''.join(self.lines)}")


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


# A script or a background job starts its children with SIGINT ignored; Python then never turns
# SIGINT into KeyboardInterrupt unless the program installs a handler itself.
SIGINT_IGNORED = ["sh", "-c", 'trap "" INT; exec "$@"', "sh"]
VM_ISOLATE_ONLY = ("--only", "vm_isolate")


@contextmanager
def local_run(
    dev_dir: Path, port: int, *options: str, wrapper: list[str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], Output]]:
    """`python -m deploy local`, as a developer starts it (vm_isolate alone, unless `options`
    say otherwise). One still running after the block (a failed test) gets SIGTERM, SIGKILL
    only if it does not stop; whatever of its broker survives is killed, so a failure leaves
    nothing running."""
    process = subprocess.Popen(
        [*(wrapper or []), sys.executable, "-m", "deploy", "local",
         "--dev-dir", str(dev_dir), "--port", str(port), *(options or VM_ISOLATE_ONLY)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        yield process, Output(process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # SIGINT may be ignored (the wrapper's case)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in live_pids_of(dev_dir / "broker"):
            os.kill(pid, signal.SIGKILL)


def post_the_printed_curl(output: Output, curl_line: str | None = None) -> httpx.Response:
    """Send what the printed curl example sends (the next one printed, unless given), once the
    run says it tails the queues."""
    curl = shlex.split((curl_line or output.wait_for("curl ")).strip())
    output.wait_for("tailing the queues")
    headers = dict(h.split(": ", 1) for h in curl[curl.index("-H") + 1 :: 2] if ": " in h)
    body = Path(curl[curl.index("--data-binary") + 1].removeprefix("@")).read_bytes()
    return httpx.post(curl[-1], content=body, headers=headers, timeout=30)


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
    with local_run(tmp_path, port, wrapper=wrapper) as (process, output):
        response = post_the_printed_curl(output)

        assert response.status_code == 202, response.text
        output.wait_for(f"id={response.json()['id']}", timeout=30)
        process.send_signal(stop_signal)
        assert process.wait(timeout=90) == 0
    output.wait_for("dev: stopped", timeout=5)
    assert not listening(port)
    assert live_pids_of(tmp_path / "broker") == []


@pytest.mark.slow
def test_with_a_cluster_the_run_says_which_node_each_function_publishes_through(
    tmp_path: Path,
) -> None:
    port = free_port()
    with local_run(tmp_path, port, *VM_ISOLATE_ONLY, "--cluster") as (process, output):
        nodes = [output.wait_for("dev: node ").split()[2] for _ in range(3)]
        response = post_the_printed_curl(output)

        assert response.status_code == 202, response.text
        said, _tailed = output.wait_for_each(
            "vm_isolate publishes through node", f"id={response.json()['id']}", timeout=30
        )
        assert said.split()[5] == nodes[0]  # the first node listed in AMQP_URL
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0
    output.wait_for("dev: stopped", timeout=5)
    assert len(set(nodes)) == 3
    assert not listening(port)
    assert live_pids_of(tmp_path / "broker") == []


def test_with_the_spool_an_alert_posted_while_the_broker_is_stopped_arrives_once_it_is_back(
    tmp_path: Path,
    pubsub: PubSubEmulator,  # unused but for its skip, saying why, where the emulator is missing
) -> None:
    with local_run(tmp_path, free_port(), "--queue-type=quorum") as (process, output):  # all
        curl, hint = output.wait_for_each("curl ", "the spool is on")
        ctl = hint.split("`")[1].split()[0]  # the printed broker-ctl, as a developer copies it
        subprocess.run([ctl, "stop_app"], check=True, capture_output=True, timeout=60)
        spooled = post_the_printed_curl(output, curl)
        subprocess.run([ctl, "start_app"], check=True, capture_output=True, timeout=60)

        assert spooled.status_code == 202, spooled.text
        assert spooled.json()["delivery"] == "spooled"
        output.wait_for(f"id={spooled.json()['id']}", timeout=90)  # drained, then tailed
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0
    output.wait_for("dev: stopped", timeout=5)
    assert live_pids_of(tmp_path / "broker") == []
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if _is_our_emulator(p, tmp_path)]


def _is_our_emulator(cmdline: Path, dev_dir: Path) -> bool:
    try:
        return str(dev_dir / "pubsub") in cmdline.read_text()
    except OSError:
        return False
