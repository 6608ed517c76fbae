"""`nox -s bench`: event-relay side by side with the designs users would otherwise run.

Every row publishes the same event to the same private mutual-TLS RabbitMQ node (confirms,
persistent, mandatory) into one queue bound to `vm.isolate`. Rows run in interleaved rounds in
one process on one machine, once per broker mode (the broker's data on disk, then on a tmpfs);
after each cell the queue depth must equal the 2xx count. Each cell records the server's and the
broker's CPU per event. Prints Markdown tables and the targets' verdicts; writes
bench/results/<stamp>.json and .png (and docs/bench.png and docs/bench.json with --publish).
Nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import machine, profile, report, scale_out, targets
from bench.load import LoadError, wrk_path
from bench.modes import MODES, BrokerMode, ModeUnavailable, broker_mode
from bench.phase import BUSY_MACHINE_CORES, Phase, Plan, Results, say
from bench.rows import (
    ALL_ROWS,
    BARE_ROWS,
    CANDIDATE_ROW,
    COLD_ONLY_ROWS,
    HTTP_ROWS,
    LABELS,
    RAW_ROW,
    SPEEDUP_ROWS,
    SPOOL_ROW,
    compile_sources,
    deployed_concurrency,
    deployed_connection_bound,
    raw_env,
)
from bench.servers import ServerError
from bench.spool import BenchSpool
from deploy import REPO
from deploy.broker import BrokerError, BrokerNode, start_broker
from deploy.pubsub_emulator import emulator_missing

RESULTS = REPO / "bench" / "results"
PUBLISHED_CHART = REPO / "docs" / "bench.png"
PUBLISHED_RESULTS = REPO / "docs" / "bench.json"  # the published run's cells, for readers


def parse_args(argv: list[str]) -> Plan:
    deployed = deployed_concurrency()
    bound = deployed_connection_bound()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"one short round at 8 and {deployed}, no f+ row, no profile: under two minutes",
    )
    parser.add_argument("--rows", help=f"comma-separated subset of {','.join(ALL_ROWS)}")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--seconds", type=float, help="load per cell (default 3.4, quick 1.4)")
    parser.add_argument(
        "--concurrency",
        help=f"default 1,8,32,{deployed} (the manifest's concurrency); quick 8,{deployed}",
    )
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"broker modes, default {','.join(MODES)}"
    )
    parser.add_argument(
        "--cold-runs",
        type=int,
        help="launches per row, spread over the rounds (default 40, quick 5)",
    )
    parser.add_argument(
        "--profile-seconds", type=int, help="py-spy on (a) under load (default 8, quick 0 = off)"
    )
    parser.add_argument(
        "--trace-seconds",
        type=float,
        help="strace -c on (a), (f), (c+) for this long each (default 3, quick 0 = off)",
    )
    parser.add_argument(
        "--scale-out",
        type=int,
        help=f"connections opened at once (default {bound}: the manifest's bound; 0 = off)",
    )
    parser.add_argument(
        "--candidate",
        type=Path,
        help="another checkout of event-relay, served as row (x) beside (a) in the same rounds",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter the rows run on (a virtualenv with requirements-bench.txt), e.g. "
        "the Python version deploy/functions.yaml deploys; default: this one",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help=f"also write the chart and the JSON to {PUBLISHED_CHART.relative_to(REPO)} and "
        f"{PUBLISHED_RESULTS.relative_to(REPO)}",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    if args.rows:
        rows = args.rows.split(",")
    else:
        speedups = [r for r in SPEEDUP_ROWS if not quick or r in BARE_ROWS]
        rows = [*HTTP_ROWS, SPOOL_ROW, *COLD_ONLY_ROWS, RAW_ROW, *speedups]
    if args.candidate is not None:
        if not (args.candidate / "functions" / "vm_isolate" / "main.py").exists():
            parser.error(f"{args.candidate} is not a checkout of event-relay")
        if CANDIDATE_ROW not in rows:
            rows.insert(rows.index("a") + 1 if "a" in rows else 0, CANDIDATE_ROW)
    elif CANDIDATE_ROW in rows:
        parser.error(f"row {CANDIDATE_ROW} needs --candidate DIR")
    unknown = [r for r in rows if r not in ALL_ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {','.join(ALL_ROWS)}")
    modes = args.modes.split(",")
    if [m for m in modes if m not in MODES]:
        parser.error(f"--modes: choose from {','.join(MODES)}")
    default_concurrency = [8, deployed] if quick else [1, 8, 32, deployed]
    concurrencies = (
        [int(c) for c in args.concurrency.split(",")]
        if args.concurrency
        else sorted(set(default_concurrency))
    )

    def option(value: Any, full: Any, quick_value: Any) -> Any:
        return value if value is not None else (quick_value if quick else full)

    return Plan(
        rows=rows,
        concurrencies=concurrencies,
        modes=modes,
        rounds=option(args.rounds, 3, 1),
        seconds=option(args.seconds, 3.4, 1.4),
        # One launch here varies by +-25 %, and the machine's speed from minute to minute: of
        # the same code, (a)/(i) was 1.12 in one block of 21 launches and 1.04 in a block of 41
        # three minutes later. 40, spread over the rounds, cost about a minute more than 21.
        cold_runs=option(args.cold_runs, 40, 5),
        warmup_seconds=0.0 if quick else 1.4,
        profile_seconds=option(args.profile_seconds, 8, 0),
        trace_seconds=option(args.trace_seconds, 3.0, 0.0),
        scale_out=option(args.scale_out, bound, bound),
        deployed=deployed,
        candidate=args.candidate.resolve() if args.candidate else None,
        python=args.python,
        publish=args.publish,
        quick=quick,
    )


def run_mode(
    plan: Plan,
    results: Results,
    mode: BrokerMode,
    work_dir: Path,
    first: bool,
    spool: BenchSpool | None,
) -> None:
    """One broker mode: its node, the cold starts (first mode only), the rounds, the scale-out
    (first mode only), and the profile and the syscall counts (in the tmpfs mode)."""
    say(f"{mode.describe()}: starting a private RabbitMQ node with mutual TLS ...")
    work_dir.mkdir(parents=True, exist_ok=True)
    node = start_broker(mode.root / "broker", purpose=f"bench-{mode.name}")
    try:
        if results.rabbitmq == "unknown":
            results.rabbitmq = _rabbitmq_version(node)
        results.modes.append(mode)
        profile_mode = "tmpfs" if "tmpfs" in plan.modes else plan.modes[0]
        phase = Phase(plan, results, mode, node, work_dir, spool)
        try:
            phase.run(cold_starts=first, profile_here=mode.name == profile_mode)
        finally:
            phase.stop()
        if first and plan.scale_out > 0:
            say(f"scale-out: opening {plan.scale_out} mTLS connections to the broker at once")
            results.scale_out = scale_out.measure(node, plan.scale_out, raw_env(node.client_env()))
    finally:
        node.stop()


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(sys.argv[1:] if argv is None else argv)
    wrk_path()  # fail before starting anything
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    began = time.monotonic()
    results = Results()
    compile_sources(plan.python, plan.candidate)
    with tempfile.TemporaryDirectory(prefix="event-relay-bench-") as work, ExitStack() as stack:
        spool = None
        if SPOOL_ROW in plan.rows:
            if (missing := emulator_missing()) is not None:
                say(f"no row (s): {missing}")
                plan.rows.remove(SPOOL_ROW)
            else:
                say("starting Google's Pub/Sub emulator for row (s) ...")
                spool = BenchSpool(Path(work))
                stack.callback(spool.stop)
        for index, name in enumerate(plan.modes):
            try:
                with broker_mode(name) as mode:
                    run_mode(plan, results, mode, Path(work) / name, index == 0, spool)
            except ModeUnavailable as exc:
                say(f"skipping the {name} mode: {exc}")
                results.skipped_modes[name] = str(exc)
            except (ServerError, LoadError, BrokerError) as exc:
                say(f"FAILED: {exc}")
                return 1
    if results.profile_text is not None:
        (RESULTS / f"{stamp}-profile-a.txt").write_text(results.profile_text)
    return publish_results(plan, results, stamp, time.monotonic() - began)


def publish_results(plan: Plan, results: Results, stamp: str, took: float) -> int:
    modes = [m.name for m in results.modes]
    summaries = report.summarize(results.cells)
    checks = targets.targets(
        results.cells,
        results.cold,
        modes=modes,
        concurrencies=plan.concurrencies,
        deployed=plan.deployed,
    )
    earlier = targets.earlier_targets(results.cells, modes=modes) if modes else []
    grid = targets.ratio_grid(
        results.cells,
        modes=modes,
        concurrencies=plan.concurrencies,
        candidate=plan.candidate is not None,
    )
    described = machine.describe(results.rabbitmq, plan.python)
    where = (
        f"{described['cpu']}, {described['cores']} cores, Linux {described['kernel']}, "
        f"Python {described['python']}, RabbitMQ {results.rabbitmq}"
    )
    print(f"\n## event-relay benchmark {stamp} ({'quick' if plan.quick else 'full'} run)\n")
    print(
        f"{where}; broker on the same machine; {plan.rounds} interleaved round(s) of "
        f"{plan.seconds:g} s per cell in each broker mode; req/s is the median of the rounds "
        "(range in brackets); p50 / p99 are wrk's; CPU µs/event is the user + system CPU of all "
        "the server's processes over the cell divided by its 2xx answers (in brackets: the "
        f"broker's); concurrency {plan.deployed} is what deploy/functions.yaml deploys.\n"
    )
    for mode in results.modes:
        print(f"### {mode.describe()}\n")
        print(report.mode_table(mode.name, plan.rows, plan.concurrencies, summaries))
        print()
    for name, why in results.skipped_modes.items():
        print(f"The {name} mode was skipped: {why}.\n")
    if "tmpfs" in modes:
        print(
            "The tmpfs mode is a device of the benchmark only: with the broker's data in RAM its "
            "fsyncs cost nothing, so the broker is not the limit and the cells measure the "
            "servers' own code. No broker should run like this.\n"
        )
    print("### Targets\n")
    print(report.targets_table(checks + earlier))
    print()
    print(report.verdict_line(checks))
    print()
    print(report.ratio_table(grid, modes, plan.concurrencies))
    print()
    print("### Cold start and memory\n")
    print(report.start_table(plan.rows, results.cold, results.rss_kib, plan.cold_runs))
    print()
    if results.scale_out is not None:
        print(f"### Scale-out: {plan.scale_out} new connections at once\n")
        print(report.scale_out_table(results.scale_out))
        print(
            f"\ndeploy/functions.yaml lets its functions open at most "
            f"{deployed_connection_bound()} connections: the sum of max_instances "
            f"{targets.TIMES} workers.\n"
        )
    if results.syscalls:
        print(f"### System calls per event (strace -c, {results.syscalls_where})\n")
        print(report.syscalls_table(results.syscalls))
        print()
    others = [c.cpu.get("others_cores", 0.0) for c in results.cells if c.round >= 0]
    busy = statistics.median(others) if others else 0.0
    if busy >= BUSY_MACHINE_CORES:
        print(
            f"NOTE: other work used a median {busy:.1f} of the {described['cores']} cores "
            "during the cells: the figures are low and noisy; run again on a quiet machine.\n"
        )
    if results.profile is not None:
        print(f"### Profile of (a) ({results.profile_where})\n")
        print(profile.markdown(results.profile))
    json_path = RESULTS / f"{stamp}.json"
    chart_path = RESULTS / f"{stamp}.png"
    data: dict[str, Any] = {
        "stamp": stamp,
        "quick": plan.quick,
        "plan": {k: str(v) if isinstance(v, Path) else v for k, v in plan.__dict__.items()},
        "machine": described,
        "took_s": round(took, 1),
        "others_cores_median": busy,
        "labels": {row: LABELS[row] for row in plan.rows},
        "summary": {f"{k[0]}:{k[1]}@{k[2]}": s.__dict__ for k, s in summaries.items()},
        "targets": [c.as_json() for c in checks],
        "earlier_targets": [c.as_json() for c in earlier],
        "ratios": [
            {"ratio": name, **{f"{m}@{c}": v for (m, c), v in values.items()}}
            for name, values in grid
        ],
        "connection_bound": deployed_connection_bound(),
        **results.as_json(),
    }
    text = json.dumps(data, indent=2, default=str)
    json_path.write_text(text)
    report.chart(
        [r for r in plan.rows if r not in COLD_ONLY_ROWS],
        modes,
        plan.concurrencies,
        summaries,
        chart_path,
        f"event-relay benchmark {stamp}: {where}",
    )
    if plan.publish:
        PUBLISHED_CHART.parent.mkdir(exist_ok=True)
        PUBLISHED_CHART.write_bytes(chart_path.read_bytes())
        PUBLISHED_RESULTS.write_text(text)
    print(
        f"\nwrote {json_path.relative_to(REPO)}, {chart_path.relative_to(REPO)}"
        + (
            f", {PUBLISHED_CHART.relative_to(REPO)} and {PUBLISHED_RESULTS.relative_to(REPO)}"
            if plan.publish
            else ""
        )
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
