"""System calls per event: `strace -c` on a server's processes over one cell of load.

strace slows the traced server several times over, so the cell's throughput under it means
nothing; the counts per 2xx answer are what it is for (which calls, how many of each). At a
lower speed more requests share one loop turn, so the counts of a traced server are, if
anything, a little lower than untraced.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.load import Cell

ATTACH_SECONDS = 0.5


@dataclass
class Syscalls:
    row: str
    concurrency: int
    events: int  # 2xx answers during the trace
    calls: dict[str, int]  # syscall -> count

    def per_event(self) -> dict[str, float]:
        events = max(self.events, 1)
        return {name: n / events for name, n in sorted(self.calls.items(), key=lambda i: -i[1])}

    @property
    def total_per_event(self) -> float:
        return sum(self.calls.values()) / max(self.events, 1)

    def as_json(self) -> dict[str, object]:
        return {
            "row": self.row,
            "concurrency": self.concurrency,
            "events": self.events,
            "calls": self.calls,
            "per_event": self.per_event(),
            "total_per_event": self.total_per_event,
        }


def parse_summary(text: str) -> dict[str, int]:
    """strace -c's table: `% time  seconds  usecs/call  calls  [errors]  syscall` per line."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or not parts[0].replace(".", "").isdigit() or parts[-1] == "total":
            continue
        calls[parts[-1]] = int(parts[3])
    return calls


def trace(pids: list[int], load: Callable[[], Cell], output: Path) -> Syscalls | None:
    """Count the system calls of `pids` (all their threads) while `load()` runs."""
    strace = shutil.which("strace")
    if strace is None:
        print("syscall counts skipped: strace is not installed (apt-get install -y strace)")
        return None
    command = [strace, "-c", "-f", "-q", "-o", str(output)]
    for pid in pids:
        command += ["-p", str(pid)]
    tracer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(ATTACH_SECONDS)
    try:
        cell = load()
    finally:
        tracer.send_signal(signal.SIGINT)  # detach: strace writes its summary
        try:
            tracer.wait(timeout=20)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait()
    if not output.exists():
        error = tracer.stderr.read().decode(errors="replace") if tracer.stderr else ""
        print(f"syscall counts skipped: strace failed: {error.strip()[-300:]}")
        return None
    return Syscalls(cell.row, cell.concurrency, cell.ok, parse_summary(output.read_text()))
