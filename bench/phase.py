"""One broker mode of a run: its broker, its servers, its interleaved rounds of cells."""

from __future__ import annotations

import secrets
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench import machine, profile
from bench.broker_queue import BenchQueue
from bench.load import Cell, run_raw, run_wrk
from bench.modes import BrokerMode
from bench.rows import CANDIDATE_ROW, EVENT_FILE, RAW_ROW, raw_command, raw_env, server_specs
from bench.scale_out import ScaleOut
from bench.servers import Server, cold_start
from bench.spool import BenchSpool
from bench.syscalls import Syscalls, trace
from bench.targets import RAW_BESIDE
from deploy.broker import BrokerNode

MAX_REQUESTS = 2_000_000  # per cell: a bound in count besides the bound in time
BUSY_MACHINE_CORES = 0.4  # CPU used by other work during a cell that makes it noisy
# strace -c: ours, the usual design, a bare function on our HTTP stack, a candidate change
TRACED_ROWS = ("a", "f", "c+", CANDIDATE_ROW)


@dataclass(frozen=True)
class Plan:
    rows: list[str]
    concurrencies: list[int]
    modes: list[str]
    rounds: int
    seconds: float
    cold_runs: int
    warmup_seconds: float
    profile_seconds: int
    trace_seconds: float
    scale_out: int  # connections opened at once; 0: not measured
    deployed: int  # the concurrency per instance deploy/functions.yaml deploys
    candidate: Path | None
    python: str  # the interpreter of the rows' servers and of (d)
    publish: bool
    quick: bool


@dataclass
class Results:
    """What every broker mode of a run adds up to."""

    cells: list[Cell] = field(default_factory=list)
    cold: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    rss_kib: dict[str, int] = field(default_factory=dict)
    modes: list[BrokerMode] = field(default_factory=list)
    skipped_modes: dict[str, str] = field(default_factory=dict)
    profile: profile.Profile | None = None
    profile_text: str | None = None
    profile_where: str = ""
    syscalls: list[Syscalls] = field(default_factory=list)
    syscalls_where: str = ""
    scale_out: ScaleOut | None = None
    rabbitmq: str = "unknown"

    def as_json(self) -> dict[str, Any]:
        return {
            "modes": [m.as_json() for m in self.modes],
            "skipped_modes": self.skipped_modes,
            "cold_start_s": dict(self.cold),
            "peak_rss_kib": self.rss_kib,
            "cells": [cell.as_json() for cell in self.cells],
            "profile_a": self.profile.as_json() if self.profile else None,
            "profile_where": self.profile_where,
            "syscalls": [s.as_json() for s in self.syscalls],
            "syscalls_where": self.syscalls_where,
            "scale_out": self.scale_out.as_json() if self.scale_out else None,
        }


_STARTED = time.monotonic()


def say(text: str) -> None:
    print(f"bench [{time.monotonic() - _STARTED:4.0f} s]: {text}", file=sys.stderr, flush=True)


class Phase:
    """The rows' servers on one broker node; stops every server it started."""

    def __init__(
        self,
        plan: Plan,
        results: Results,
        mode: BrokerMode,
        node: BrokerNode,
        work_dir: Path,
        spool: BenchSpool | None = None,
    ) -> None:
        self.plan = plan
        self.results = results
        self.mode = mode
        self.node = node
        self.work_dir = work_dir
        token = secrets.token_urlsafe(24)
        self.authorization = f"Bearer {token}"
        self.body = EVENT_FILE.read_bytes()
        self.headers = {"Content-Type": "application/json", "Authorization": self.authorization}
        self.spool = spool
        self.specs = server_specs(
            node.client_env(),
            token,
            python=plan.python,
            candidate=plan.candidate,
            spool_env=spool.env if spool else None,
        )
        self.queue = BenchQueue(node)
        self.servers: dict[str, Server] = {}
        self.cpu = machine.CpuWindow()
        self._launch_sets = 0  # sets of interleaved cold launches so far: their order rotates

    def http_rows(self) -> list[str]:
        """The rows put under load over HTTP."""
        return [r for r in self.plan.rows if r != RAW_ROW and self.specs[r].loaded]

    def run(self, *, cold_starts: bool, profile_here: bool) -> None:
        # The launches are spread over the mode's rounds (a share before the first and one after
        # each), not measured in one minute of the run: the machine's speed drifts from minute
        # to minute, and in one block a slow minute moves (a)/(i) by as much as the target's
        # 10 % margin.
        shares = _shares(self.plan.cold_runs, self.plan.rounds + 1) if cold_starts else []
        if cold_starts:
            self.measure_cold_starts(max(shares[0], 1), keep_last=True)
        for row in self.http_rows():
            self.start_server(row)
        for round_number in range(self.plan.rounds):
            say(f"{self.mode.name}: round {round_number + 1} of {self.plan.rounds}")
            self.run_round(round_number)
            if cold_starts:
                self.measure_cold_starts(shares[round_number + 1], keep_last=False)
        for row, server in self.servers.items():
            self.results.rss_kib[row] = max(self.results.rss_kib.get(row, 0), server.peak_rss_kib())
        if profile_here and self.plan.profile_seconds > 0 and "a" in self.servers:
            self.profile_relay()
        if profile_here and self.plan.trace_seconds > 0:
            self.trace_syscalls()

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.queue.close()

    # --- the phases ---------------------------------------------------------------------

    def measure_cold_starts(self, launches: int, *, keep_last: bool) -> None:
        """Launch each row `launches` times, interleaved; with `keep_last`, the last launch of
        each loaded row serves the load."""
        rows = [r for r in self.plan.rows if r != RAW_ROW and self.specs[r].cold_start]
        loaded = self.http_rows()
        if rows and launches:
            say(f"cold starts: {launches} launches of {', '.join(rows)}, interleaved")
        for run in range(launches):
            last = run == launches - 1
            for row in _rotated(rows, self._launch_sets):
                seconds, server = cold_start(
                    self.specs[row],
                    self.body,
                    self.headers,
                    self._log(row),
                    keep=keep_last and last and row in loaded,
                )
                if self.plan.cold_runs > 0:
                    self.results.cold[row].append(seconds)
                if server is not None:
                    self.servers[row] = server
            self._launch_sets += 1

    def start_server(self, row: str) -> None:
        if row not in self.servers:
            server = Server(self.specs[row], self._log(row))
            self.servers[row] = server
            server.launch()
            server.first_2xx(self.body, self.headers)
        if self.plan.warmup_seconds > 0:
            self._load(row, self.plan.deployed, self.plan.warmup_seconds, round_number=-1)
        self.queue.purge()

    def run_round(self, round_number: int) -> None:
        for position, concurrency in enumerate(self.plan.concurrencies):
            rows = list(self.http_rows())
            if RAW_ROW in self.plan.rows and concurrency == RAW_BESIDE:
                rows.append(RAW_ROW)
            for row in _rotated(rows, round_number + position):
                self.queue.purge()
                if self.spool is not None:
                    self.spool.drain()
                cell = self.run_cell(row, concurrency, round_number)
                self.check_queue(cell)
                self.results.cells.append(cell)
                say(_cell_line(cell))

    def run_cell(self, row: str, concurrency: int, round_number: int) -> Cell:
        """One cell, with the CPU the server and the broker used during it."""
        assert self.node.server_pid is not None
        broker = machine.process_tree(self.node.server_pid)
        pids = self._our_pids()
        server = self.servers.get(row)
        server_cpu = server.cpu_seconds() if server else 0.0
        broker_cpu = machine.cpu_seconds(broker)
        self.cpu.start(pids)
        started = time.perf_counter()
        if row == RAW_ROW:
            command = raw_command(self.plan.python, self.plan.seconds, MAX_REQUESTS)
            cell, rss = run_raw(
                command,
                raw_env(self.node.client_env()),
                row=row,
                round_number=round_number,
                seconds=self.plan.seconds,
            )
            self.results.rss_kib[row] = max(self.results.rss_kib.get(row, 0), rss)
        else:
            cell = self._load(row, concurrency, self.plan.seconds, round_number=round_number)
            assert server is not None
            cell.server_cpu_s = server.cpu_seconds() - server_cpu
        cell.broker_cpu_s = machine.cpu_seconds(broker) - broker_cpu
        cell.cpu = self.cpu.stop(pids, time.perf_counter() - started)
        cell.mode = self.mode.name
        return cell

    def check_queue(self, cell: Cell) -> None:
        """Every 2xx must be a message in the queue (in the spool, for (s)), and nothing else."""
        publishes = cell.row == RAW_ROW or self.specs[cell.row].publishes
        cell.expected_depth = expected = cell.ok if publishes else 0
        if cell.row != RAW_ROW and self.specs[cell.row].spooled:
            assert self.spool is not None
            cell.queue_depth = depth = self.spool.drain()
            if depth != expected:
                say(f"WARNING (s) @{cell.concurrency}: {depth} spooled ≠ {expected} 2xx answers")
            return
        depth = self.queue.depth()
        for _ in range(20):  # a confirm precedes the answer; give the count a moment anyway
            if depth == expected:
                break
            time.sleep(0.05)
            depth = self.queue.depth()
        cell.queue_depth = depth
        cell.message_bytes = self.queue.sample_size()
        if depth != expected:
            say(
                f"WARNING ({cell.row}) @{cell.concurrency}: queue depth {depth} "
                f"≠ {expected} expected ({cell.ok} 2xx answers)"
            )

    def profile_relay(self) -> None:
        """py-spy on (a)'s worker while it serves the deployed concurrency."""
        server = self.servers["a"]
        seconds, concurrency = self.plan.profile_seconds, self.plan.deployed
        output = self.work_dir / "profile-a.txt"
        say(f"profiling (a) with py-spy for {seconds} s under load at concurrency {concurrency}")
        load = threading.Thread(
            target=self._load, args=("a", concurrency, seconds + 2.0), kwargs={"round_number": -2}
        )
        load.start()
        time.sleep(0.8)
        try:
            self.results.profile = profile.record(server.worker_pid(), seconds, output)
        finally:
            load.join()
            self.queue.purge()
        if output.exists():
            self.results.profile_text = output.read_text()
        self.results.profile_where = f"{self.mode.name} @{concurrency}"

    def trace_syscalls(self) -> None:
        """strace -c on each traced row's processes over one cell at the deployed concurrency."""
        concurrency = self.plan.deployed
        for row in [r for r in TRACED_ROWS if r in self.servers]:
            say(f"counting ({row})'s system calls with strace -c at concurrency {concurrency}")
            output = self.work_dir / f"strace-{row}.txt"
            load = partial(self._load, row, concurrency, self.plan.trace_seconds, -3)
            found = trace(self.servers[row].pids(), load, output)
            self.queue.purge()
            if found is None:
                return
            self.results.syscalls.append(found)
        self.results.syscalls_where = f"{self.mode.name} @{concurrency}"

    # --- helpers ------------------------------------------------------------------------

    def _load(self, row: str, concurrency: int, seconds: float, round_number: int) -> Cell:
        return run_wrk(
            self.servers[row].url,
            row=row,
            round_number=round_number,
            body_file=EVENT_FILE,
            authorization=self.authorization,
            concurrency=concurrency,
            seconds=seconds,
            max_requests=MAX_REQUESTS,
        )

    def _log(self, row: str) -> Path:
        return self.work_dir / f"server-{row.replace('+', '-speedups')}.log"

    def _our_pids(self) -> list[int]:
        pids = [pid for server in self.servers.values() for pid in server.pids()]
        if self.node.server_pid is not None:
            pids += machine.process_tree(self.node.server_pid)
        return pids


def _shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` nearly equal whole shares, the larger ones first."""
    return [total // parts + (1 if part < total % parts else 0) for part in range(parts)]


def _rotated(items: list[str], by: int) -> list[str]:
    shift = by % len(items) if items else 0
    return items[shift:] + items[:shift]


def _cell_line(cell: Cell) -> str:
    flags = []
    if cell.failed:
        flags.append(f"{cell.failed} FAILED {cell.non_2xx} {cell.socket_errors}")
    if not cell.queue_ok:
        flags.append(f"queue depth {cell.queue_depth}")
    others = cell.cpu.get("others_cores", 0.0)
    if others >= BUSY_MACHINE_CORES:
        flags.append(f"other work on the machine: {others:.1f} cores")
    cpu = f"  {cell.cpu_us:,.0f} µs/event" if cell.cpu_us is not None else ""
    broker = f" (broker {cell.broker_cpu_us:,.0f})" if cell.broker_cpu_us is not None else ""
    return (
        f"  ({cell.row}) @{cell.concurrency}: {cell.rate:,.0f}/s  p50 {cell.p50_ms:.1f} ms  "
        f"p99 {cell.p99_ms:.1f} ms{cpu}{broker}  {cell.ok} ok"
        + ("  " + "; ".join(flags) if flags else "")
    )
