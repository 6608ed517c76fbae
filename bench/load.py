"""Load generators, each a separate process bounded in time and count, on loopback only:
wrk (C) for the HTTP rows, bench.baselines.raw_pika for row d."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LUA_SCRIPT = Path(__file__).resolve().parent / "post.lua"
WRK_INSTALL = "apt-get install -y wrk"
# After its last request, wrk waits for the answers in flight: post.lua stops it as the last one
# arrives, and wrk's own deadline (its --duration) lies this far beyond the sending time.
ANSWER_DEADLINE_SECONDS = 10


@dataclass
class Cell:
    """One measurement: one row at one concurrency in one round."""

    row: str
    concurrency: int
    round: int
    completed: int  # answers received (or messages published, for d)
    ok: int  # 2xx answers (or confirmed messages)
    rate: float  # ok per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    elapsed_s: float
    non_2xx: dict[str, int]  # status class -> count, plus 503 on its own
    socket_errors: dict[str, int]
    queue_depth: int | None = None
    expected_depth: int | None = None  # the 2xx count, or 0 for a row that does not publish
    message_bytes: int | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # cores busy: ours, others, machine
    mode: str = ""  # where the broker keeps its data: "disk" or "tmpfs"
    server_cpu_s: float | None = None  # user + system CPU of the server's processes
    broker_cpu_s: float | None = None  # the same for the broker node (beam.smp)

    @property
    def cpu_us(self) -> float | None:
        """The server's CPU per 2xx answer, in microseconds."""
        return _per_event(self.server_cpu_s, self.ok)

    @property
    def broker_cpu_us(self) -> float | None:
        """The broker's CPU per 2xx answer (per confirmed message), in microseconds."""
        return _per_event(self.broker_cpu_s, self.ok)

    @property
    def failed(self) -> int:
        refused = sum(n for status, n in self.non_2xx.items() if status != "503")  # in 5xx
        return refused + sum(self.socket_errors.values())

    @property
    def queue_ok(self) -> bool:
        return self.queue_depth == self.expected_depth

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "failed": self.failed,
            "queue_ok": self.queue_ok,
            "cpu_us": self.cpu_us,
            "broker_cpu_us": self.broker_cpu_us,
        }


def _per_event(seconds: float | None, events: int) -> float | None:
    return None if seconds is None or events <= 0 else seconds * 1e6 / events


class LoadError(RuntimeError):
    """A load generator failed or printed no summary."""


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise LoadError(f"wrk is missing: install it with `{WRK_INSTALL}` (as root)")
    return path


def run_wrk(
    url: str,
    *,
    row: str,
    round_number: int,
    body_file: Path,
    authorization: str,
    concurrency: int,
    seconds: float,
    max_requests: int,
) -> Cell:
    """POST body_file to url from `concurrency` keep-alive connections for `seconds`, then
    wait for every answer in flight."""
    if not url.startswith("http://127.0.0.1:"):
        raise LoadError(f"the load generator targets loopback only, not {url}")
    duration = math.ceil(seconds) + ANSWER_DEADLINE_SECONDS  # wrk takes whole seconds
    command = [
        wrk_path(),
        "--threads",
        "1",
        "--connections",
        str(concurrency),
        "--duration",
        f"{duration}s",
        "--timeout",
        f"{ANSWER_DEADLINE_SECONDS}s",
        "--script",
        str(LUA_SCRIPT),
        url,
        "--",
        str(body_file),
        f"{seconds:.3f}",
        str(max_requests),
        authorization,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30)
    summary = _marked_json(done.stdout, "BENCH_JSON ")
    if done.returncode != 0 or summary is None:
        raise LoadError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    ok = summary["s2xx"]
    elapsed = max(summary["elapsed_s"], 1e-9)
    return Cell(
        row=row,
        concurrency=concurrency,
        round=round_number,
        completed=summary["completed"],
        ok=ok,
        rate=ok / elapsed,
        p50_ms=summary["p50_us"] / 1000,
        p90_ms=summary["p90_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        max_ms=summary["max_us"] / 1000,
        elapsed_s=elapsed,
        non_2xx={k: summary[f"s{k}"] for k in ("1xx", "3xx", "4xx", "5xx", "503")},
        socket_errors={k: summary[f"{k}_errors"] for k in ("connect", "read", "write")}
        | {"timeout": summary["timeouts"]},
    )


def run_raw(
    command: list[str], env: dict[str, str], *, row: str, round_number: int, seconds: float
) -> tuple[Cell, int]:
    """Row d: its own process publishes for `seconds`; the cell and the process's peak RSS."""
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise LoadError(f"raw pika failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    result = json.loads(lines[-1])
    elapsed = max(result["elapsed_s"], 1e-9)
    cell = Cell(
        row=row,
        concurrency=1,
        round=round_number,
        completed=result["completed"],
        ok=result["confirmed"],
        rate=result["confirmed"] / elapsed,
        p50_ms=result["p50_us"] / 1000,
        p90_ms=result["p90_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        max_ms=result["max_us"] / 1000,
        elapsed_s=elapsed,
        non_2xx={"failures": result["failures"]},
        socket_errors={},
        server_cpu_s=result["cpu_s"],
    )
    return cell, int(result["peak_rss_kib"])


def _marked_json(output: str, marker: str) -> dict[str, Any] | None:
    for line in output.splitlines():
        if line.startswith(marker):
            parsed: dict[str, Any] = json.loads(line[len(marker) :])
            return parsed
    return None
