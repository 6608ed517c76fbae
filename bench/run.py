"""`nox -s bench`: event-relay side by side with the designs users would otherwise run.

Every row publishes the same event to the same private mutual-TLS RabbitMQ node (confirms,
persistent, mandatory) into one queue bound to `vm.isolate`. Rows run in interleaved rounds in
one process on one machine; after each cell the queue depth must equal the 2xx count. Prints a
Markdown table and the ratios against the targets; writes bench/results/<stamp>.json and .png
(and docs/bench.png with --publish). Nothing asserts: it reports.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import machine, profile, report
from bench.broker_queue import BenchQueue
from bench.load import Cell, LoadError, run_raw, run_wrk, wrk_path
from bench.rows import (
    ALL_ROWS,
    COLD_ONLY_ROWS,
    EVENT_FILE,
    HTTP_ROWS,
    LABELS,
    RAW_ROW,
    SPEEDUP_ROWS,
    raw_command,
    raw_env,
    server_specs,
)
from bench.servers import Server, ServerError, cold_start
from deploy import REPO
from deploy.broker import BrokerNode, start_broker

RESULTS = REPO / "bench" / "results"
PUBLISHED_CHART = REPO / "docs" / "bench.png"
BUSY_MACHINE_CORES = 0.4  # CPU used by other work during a cell that makes it noisy
MAX_REQUESTS = 2_000_000  # per cell: a bound in count besides the bound in time


@dataclass(frozen=True)
class Plan:
    rows: list[str]
    concurrencies: list[int]
    rounds: int
    seconds: float
    cold_runs: int
    warmup_seconds: float
    profile_seconds: int
    publish: bool
    quick: bool


def parse_args(argv: list[str]) -> Plan:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one short round, no + rows, no profile: under a minute",
    )
    parser.add_argument("--rows", help=f"comma-separated subset of {','.join(ALL_ROWS)}")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--seconds", type=float, help="load per cell (default 3.4, quick 1.4)")
    parser.add_argument("--concurrency", default="1,8,32", help="default 1,8,32")
    parser.add_argument("--cold-runs", type=int, help="launches per row (default 5, quick 3)")
    parser.add_argument(
        "--profile-seconds", type=int, help="py-spy on (a) under load (default 8, quick 0 = off)"
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help=f"also write the chart to {PUBLISHED_CHART.relative_to(REPO)}",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    rows = (
        args.rows.split(",")
        if args.rows
        else [*HTTP_ROWS, *COLD_ONLY_ROWS, RAW_ROW, *([] if quick else SPEEDUP_ROWS)]
    )
    unknown = [r for r in rows if r not in ALL_ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {','.join(ALL_ROWS)}")
    return Plan(
        rows=rows,
        concurrencies=[int(c) for c in args.concurrency.split(",")],
        rounds=args.rounds or (1 if quick else 3),
        seconds=args.seconds or (1.4 if quick else 3.4),
        cold_runs=args.cold_runs if args.cold_runs is not None else (3 if quick else 5),
        warmup_seconds=0.0 if quick else 1.4,
        profile_seconds=(
            args.profile_seconds if args.profile_seconds is not None else (0 if quick else 8)
        ),
        publish=args.publish,
        quick=quick,
    )


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


class Bench:
    """One run: the broker, the servers, the cells; stops everything it started."""

    def __init__(self, plan: Plan, work_dir: Path, node: BrokerNode) -> None:
        self.plan = plan
        self.work_dir = work_dir
        self.node = node
        self.token = secrets.token_urlsafe(24)
        self.authorization = f"Bearer {self.token}"
        self.body = EVENT_FILE.read_bytes()
        self.headers = {"Content-Type": "application/json", "Authorization": self.authorization}
        self.specs = server_specs(node.client_env(), self.token)
        self.queue = BenchQueue(node)
        self.servers: dict[str, Server] = {}
        self.cells: list[Cell] = []
        self.cold: dict[str, list[float]] = defaultdict(list)
        self.rss_kib: dict[str, int] = {}
        self.profile: profile.Profile | None = None
        self.profile_raw: Path | None = None
        self.cpu = machine.CpuWindow()

    def http_rows(self) -> list[str]:
        """The rows put under load over HTTP."""
        return [r for r in self.plan.rows if r != RAW_ROW and self.specs[r].loaded]

    def run(self) -> None:
        self.measure_cold_starts()
        for row in self.http_rows():
            self.start_server(row)
        for round_number in range(self.plan.rounds):
            say(f"round {round_number + 1} of {self.plan.rounds}")
            self.run_round(round_number)
        for row, server in self.servers.items():
            self.rss_kib[row] = server.peak_rss_kib()
        if self.plan.profile_seconds > 0 and "a" in self.servers:
            self.profile_relay()

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.queue.close()

    # --- the phases ---------------------------------------------------------------------

    def measure_cold_starts(self) -> None:
        """Launch each row cold_runs times, interleaved; the last launch serves the load."""
        rows = [r for r in self.plan.rows if r != RAW_ROW and self.specs[r].cold_start]
        runs = max(self.plan.cold_runs, 1)
        loaded = self.http_rows()
        if rows:
            say(f"cold starts: {runs} launches of {', '.join(rows)}, interleaved")
        for run in range(runs):
            last = run == runs - 1
            for row in _rotated(rows, run):
                log = self._log(row)
                seconds, server = cold_start(
                    self.specs[row], self.body, self.headers, log, keep=last and row in loaded
                )
                if self.plan.cold_runs > 0:
                    self.cold[row].append(seconds)
                if server is not None:
                    self.servers[row] = server

    def start_server(self, row: str) -> None:
        if row not in self.servers:
            server = Server(self.specs[row], self._log(row))
            self.servers[row] = server
            server.launch()
            server.first_2xx(self.body, self.headers)
        if self.plan.warmup_seconds > 0:
            run_wrk(
                self.servers[row].url,
                row=row,
                round_number=-1,
                body_file=EVENT_FILE,
                authorization=self.authorization,
                concurrency=8,
                seconds=self.plan.warmup_seconds,
                max_requests=MAX_REQUESTS,
            )
        self.queue.purge()

    def run_round(self, round_number: int) -> None:
        for position, concurrency in enumerate(self.plan.concurrencies):
            rows = list(self.http_rows())
            # (d) is one thread whatever the concurrency: measured once a round, beside the
            # cells of concurrency 8 that the ratios compare it with.
            if RAW_ROW in self.plan.rows and concurrency == report.TARGET_CONCURRENCY:
                rows.append(RAW_ROW)
            for row in _rotated(rows, round_number + position):
                self.queue.purge()
                cell = self.run_cell(row, concurrency, round_number)
                self.check_queue(cell)
                self.cells.append(cell)
                say(_cell_line(cell))

    def run_cell(self, row: str, concurrency: int, round_number: int) -> Cell:
        pids = self._our_pids()
        self.cpu.start(pids)
        started = time.perf_counter()
        if row == RAW_ROW:
            command = raw_command(sys.executable, self.plan.seconds, MAX_REQUESTS)
            cell, rss = run_raw(
                command,
                raw_env(self.node.client_env()),
                row=row,
                round_number=round_number,
                seconds=self.plan.seconds,
            )
            self.rss_kib[row] = max(self.rss_kib.get(row, 0), rss)
        else:
            cell = run_wrk(
                self.servers[row].url,
                row=row,
                round_number=round_number,
                body_file=EVENT_FILE,
                authorization=self.authorization,
                concurrency=concurrency,
                seconds=self.plan.seconds,
                max_requests=MAX_REQUESTS,
            )
        cell.cpu = self.cpu.stop(pids, time.perf_counter() - started)
        return cell

    def check_queue(self, cell: Cell) -> None:
        """Every 2xx must be a message in the queue, and nothing else."""
        publishes = cell.row == RAW_ROW or self.specs[cell.row].publishes
        cell.expected_depth = expected = cell.ok if publishes else 0
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
        server = self.servers["a"]
        seconds = self.plan.profile_seconds
        output = self.work_dir / "profile-a.txt"
        say(f"profiling (a) with py-spy for {seconds} s under load at concurrency 8")
        load = threading.Thread(
            target=run_wrk,
            args=(server.url,),
            kwargs={
                "row": "a",
                "round_number": -2,
                "body_file": EVENT_FILE,
                "authorization": self.authorization,
                "concurrency": 8,
                "seconds": seconds + 2.0,
                "max_requests": MAX_REQUESTS,
            },
        )
        load.start()
        time.sleep(0.8)
        try:
            self.profile = profile.record(server.worker_pid(), seconds, output)
        finally:
            load.join()
            self.queue.purge()
        self.profile_raw = output

    # --- helpers ------------------------------------------------------------------------

    def _log(self, row: str) -> Path:
        return self.work_dir / f"server-{row.replace('+', '-speedups')}.log"

    def _our_pids(self) -> list[int]:
        pids = [pid for server in self.servers.values() for pid in server.pids()]
        if self.node.server_pid is not None:
            pids += machine.process_tree(self.node.server_pid)
        return pids


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
    return (
        f"  ({cell.row}) @{cell.concurrency}: {cell.rate:,.0f}/s  p50 {cell.p50_ms:.1f} ms  "
        f"p99 {cell.p99_ms:.1f} ms  {cell.ok} ok" + ("  " + "; ".join(flags) if flags else "")
    )


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(sys.argv[1:] if argv is None else argv)
    wrk_path()  # fail before starting anything
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="event-relay-bench-") as work:
        work_dir = Path(work)
        say("starting a private RabbitMQ node with mutual TLS ...")
        node = start_broker(work_dir / "broker", purpose="bench")
        bench: Bench | None = None
        try:
            rabbitmq = _rabbitmq_version(node)
            bench = Bench(plan, work_dir, node)
            try:
                bench.run()
            finally:
                bench.stop()
            if bench.profile_raw is not None and bench.profile_raw.exists():
                (RESULTS / f"{stamp}-profile-a.txt").write_text(bench.profile_raw.read_text())
        except (ServerError, LoadError) as exc:
            say(f"FAILED: {exc}")
            return 1
        finally:
            node.stop()
    assert bench is not None
    return publish_results(plan, bench, stamp, rabbitmq, time.monotonic() - began)


def publish_results(plan: Plan, bench: Bench, stamp: str, rabbitmq: str, took: float) -> int:
    summaries = report.summarize(bench.cells)
    found = report.ratios(bench.cells)
    latency = report.latency_target(summaries)
    cold = report.cold_start_target(bench.cold)
    described = machine.describe(rabbitmq)
    where = (
        f"{described['cpu']}, {described['cores']} cores, Linux {described['kernel']}, "
        f"Python {described['python']}, RabbitMQ {rabbitmq}"
    )
    table = report.table(plan.rows, plan.concurrencies, summaries, bench.cold, bench.rss_kib)
    print(f"\n## event-relay benchmark {stamp} ({'quick' if plan.quick else 'full'} run)\n")
    print(
        f"{where}; broker on the same machine; {plan.rounds} interleaved round(s) of "
        f"{plan.seconds:g} s per cell; req/s is the median of the rounds (range in brackets); "
        f"p50 / p99 are wrk's; cold start is the median of {plan.cold_runs} launches to the "
        f"first 202; peak RSS sums VmHWM over the server's processes.\n"
    )
    print(table)
    print()
    print(report.targets_text(found, latency, cold))
    others = [c.cpu.get("others_cores", 0.0) for c in bench.cells]
    if others and statistics.median(others) >= BUSY_MACHINE_CORES:
        print(
            f"\nNOTE: other work used a median {statistics.median(others):.1f} of the "
            f"{described['cores']} cores during the cells: the figures are low and noisy; "
            "run again on a quiet machine."
        )
    if bench.profile is not None:
        print()
        print(profile.markdown(bench.profile))
    json_path = RESULTS / f"{stamp}.json"
    chart_path = RESULTS / f"{stamp}.png"
    data: dict[str, Any] = {
        "stamp": stamp,
        "quick": plan.quick,
        "plan": plan.__dict__,
        "machine": described,
        "took_s": round(took, 1),
        "event_bytes": len(bench.body),
        "labels": {row: LABELS[row] for row in plan.rows},
        "summary": {f"{s.row}@{s.concurrency}": s.__dict__ for s in summaries.values()},
        "ratios": found,
        "p99_over_p50_a": latency,
        "cold_start_s": dict(bench.cold),
        "cold_start_ratio_a_c": cold,
        "peak_rss_kib": bench.rss_kib,
        "cells": [cell.as_json() for cell in bench.cells],
        "profile_a": bench.profile.as_json() if bench.profile else None,
    }
    json_path.write_text(json.dumps(data, indent=2, default=str))
    report.chart(
        plan.rows,
        plan.concurrencies,
        summaries,
        chart_path,
        f"event-relay benchmark {stamp}: {where}",
    )
    if plan.publish:
        PUBLISHED_CHART.parent.mkdir(exist_ok=True)
        PUBLISHED_CHART.write_bytes(chart_path.read_bytes())
    print(
        f"\nwrote {json_path.relative_to(REPO)}, {chart_path.relative_to(REPO)}"
        + (f" and {PUBLISHED_CHART.relative_to(REPO)}" if plan.publish else "")
        + f" in {took:.0f} s"
    )
    return 0


def _rabbitmq_version(node: BrokerNode) -> str:
    try:
        return node.ctl("version").strip()
    except (OSError, subprocess.SubprocessError, RuntimeError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
