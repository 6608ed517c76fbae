"""Turn the cells into the tables, the targets' verdicts and the chart."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bench.load import Cell
from bench.modes import LABELS as MODE_LABELS
from bench.rows import LABELS, RAW_ROW
from bench.scale_out import ScaleOut
from bench.syscalls import Syscalls
from bench.targets import TIMES, Check

SummaryKey = tuple[str, str, int]  # broker mode, row, concurrency
DASH = "\N{EN DASH}"


@dataclass
class Summary:
    mode: str
    row: str
    concurrency: int
    rate: float
    rate_min: float
    rate_max: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None  # the server's CPU per 2xx answer, median of the rounds
    broker_cpu_us: float | None  # the broker's, per confirmed message
    ok: int
    failed: int
    non_2xx: dict[str, int]
    queue_mismatches: int
    rounds: int


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(cells: list[Cell]) -> dict[SummaryKey, Summary]:
    groups: dict[SummaryKey, list[Cell]] = defaultdict(list)
    for cell in cells:
        if cell.round >= 0:
            groups[(cell.mode, cell.row, cell.concurrency)].append(cell)
    result = {}
    for key, group in groups.items():
        rates = [c.rate for c in group]
        non_2xx: dict[str, int] = defaultdict(int)
        for c in group:
            for status, n in c.non_2xx.items():
                non_2xx[status] += n
        result[key] = Summary(
            mode=key[0],
            row=key[1],
            concurrency=key[2],
            rate=statistics.median(rates),
            rate_min=min(rates),
            rate_max=max(rates),
            p50_ms=statistics.median(c.p50_ms for c in group),
            p99_ms=statistics.median(c.p99_ms for c in group),
            cpu_us=_median([c.cpu_us for c in group]),
            broker_cpu_us=_median([c.broker_cpu_us for c in group]),
            ok=sum(c.ok for c in group),
            failed=sum(c.failed for c in group),
            non_2xx={k: v for k, v in non_2xx.items() if v},
            queue_mismatches=sum(not c.queue_ok for c in group),
            rounds=len(group),
        )
    return result


# --- tables ----------------------------------------------------------------------------------


def _row_name(row: str) -> str:
    return f"({row}) {LABELS[row]}"


def _fmt_rate(s: Summary | None) -> str:
    if s is None:
        return "—"
    spread = f" ({s.rate_min:,.0f}{DASH}{s.rate_max:,.0f})" if s.rounds > 1 else ""
    return f"{s.rate:,.0f}{spread}"


def _fmt_latency(s: Summary | None) -> str:
    return "—" if s is None else f"{s.p50_ms:.1f} / {s.p99_ms:.1f}"


def _fmt_cpu(s: Summary | None) -> str:
    if s is None or s.cpu_us is None:
        return "—"
    broker = f" ({s.broker_cpu_us:,.0f})" if s.broker_cpu_us is not None else ""
    return f"{s.cpu_us:,.0f}{broker}"


def _markdown(header: list[str], lines: list[list[str]], right: int = 1) -> str:
    """A Markdown table; columns from `right` on are right-aligned."""
    align = ["---"] * right + ["---:"] * (len(header) - right)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def mode_table(
    mode: str, rows: list[str], concurrencies: list[int], summaries: dict[SummaryKey, Summary]
) -> str:
    """Throughput, latency and CPU per event of every loaded row in one broker mode."""
    header = ["row"]
    for c in concurrencies:
        header += [f"req/s @{c}", f"p50 / p99 ms @{c}", f"CPU µs/event @{c} (broker)"]
    header.append("errors")
    lines = []
    for row in rows:
        if not any((mode, row, c) in summaries for c in [1, *concurrencies]):
            continue
        cells = [_row_name(row)]
        for position, c in enumerate(concurrencies):
            s = summaries.get((mode, row, 1 if row == RAW_ROW else c))
            if row == RAW_ROW and position != 0:
                s = None  # one thread, one message at a time: shown once
            cells += [_fmt_rate(s), _fmt_latency(s), _fmt_cpu(s)]
        cells.append(_errors(mode, row, summaries))
        lines.append(cells)
    return _markdown(header, lines, right=len(header) - 1) if lines else ""


def _errors(mode: str, row: str, summaries: dict[SummaryKey, Summary]) -> str:
    notes = []
    for (m, name, c), s in sorted(summaries.items()):
        if name != row or m != mode:
            continue
        if s.failed:
            detail = ", ".join(f"{k}: {v}" for k, v in s.non_2xx.items())
            notes.append(f"@{c}: {s.failed} failed ({detail})" if detail else f"@{c}: {s.failed}")
        if s.queue_mismatches:
            notes.append(f"@{c}: queue depth ≠ 2xx in {s.queue_mismatches} round(s)")
    return "; ".join(notes) or "none"


def start_table(
    rows: list[str], cold: dict[str, list[float]], rss_kib: dict[str, int], cold_runs: int
) -> str:
    """Cold start (median of the launches, and its ratio to the import floor (i)), peak RSS."""
    floor = statistics.median(cold["i"]) if cold.get("i") else None
    hello = statistics.median(cold["c"]) if cold.get("c") else None
    header = [
        "row",
        f"cold start s (median of {cold_runs})",
        f"{TIMES} (i)",
        f"{TIMES} (c)",
        "peak RSS MiB",
    ]
    lines = []
    for row in rows:
        if not cold.get(row) and not rss_kib.get(row):
            continue
        start = statistics.median(cold[row]) if cold.get(row) else None
        lines.append(
            [
                _row_name(row),
                f"{start:.3f}" if start is not None else "—",
                f"{start / floor:.2f}" if start is not None and floor else "—",
                f"{start / hello:.2f}" if start is not None and hello else "—",
                f"{rss_kib[row] / 1024:.0f}" if rss_kib.get(row) else "—",
            ]
        )
    return _markdown(header, lines)


def targets_table(checks: list[Check]) -> str:
    header = ["target", "broker mode", "@", "measured: median of rounds (range)", "verdict"]
    lines = []
    for check in checks:
        median = check.median
        if median is None:
            continue
        low, high = min(check.values), max(check.values)
        spread = f" ({low:.2f}{DASH}{high:.2f})" if len(check.values) > 1 else ""
        verdict = "holds" if check.holds else "**missed**"
        if check.holds is not None and check.holds != check.holds_every_round:
            verdict += " (not in every round)" if check.holds else " (held in some rounds)"
        name = f"{check.metric}: {check.target}"
        if check.source != "issue 16":
            name += f" ({check.source})"
        lines.append(
            [
                name,
                check.mode or "",
                str(check.concurrency or ""),
                f"{median:.2f}{spread}",
                verdict,
            ]
        )
    return _markdown(header, lines, right=3)


def verdict_line(checks: list[Check]) -> str:
    judged = [c for c in checks if c.holds is not None]
    missed = [c for c in judged if not c.holds]
    text = f"{len(judged) - len(missed)} of {len(judged)} targets hold"
    if missed:
        text += "; missed: " + "; ".join(
            f"{c.metric} {c.target}" + (f" ({c.mode} @{c.concurrency})" if c.mode else "")
            for c in missed
        )
    return text + "."


def ratio_table(
    grid: list[tuple[str, dict[tuple[str, int], float | None]]],
    modes: list[str],
    concurrencies: list[int],
) -> str:
    header = ["ratio (median of rounds)"] + [f"{m} @{c}" for m in modes for c in concurrencies]
    lines = [
        [name]
        + [
            f"{v:.2f}" if (v := values.get((m, c))) is not None else "—"
            for m in modes
            for c in concurrencies
        ]
        for name, values in grid
    ]
    return _markdown(header, lines)


def scale_out_table(result: ScaleOut) -> str:
    header = [
        "connections opened at once",
        "opened in s (one client)",
        "broker CPU ms / connection",
        "client CPU ms / connection",
        "RabbitMQ connection memory KiB / connection",
        "Erlang VM KiB / connection",
        "beam RSS KiB / connection",
        "broker idle cores, with them open",
    ]
    failed = f" ({result.failed} failed)" if result.failed else ""
    line = [
        f"{result.opened}{failed}",
        f"{result.seconds:.2f}",
        f"{result.broker_cpu_ms_per_connection:.1f}",
        f"{result.client_cpu_ms_per_connection:.1f}",
        f"{result.memory_kib_per_connection:.0f}",
        f"{result.erlang_kib_per_connection:.0f}",
        f"{result.rss_kib_per_connection:.0f}",
        f"{result.broker_idle_cores_before:.2f} → {result.broker_idle_cores_with_connections:.2f}",
    ]
    return _markdown(header, [line], right=0)


def syscalls_table(traces: list[Syscalls], top: int = 10) -> str:
    if not traces:
        return ""
    per_event = [t.per_event() for t in traces]
    names: list[str] = []
    for counts in per_event:
        names += [n for n in list(counts)[:top] if n not in names]
    header = ["system calls per event"] + [f"({t.row}) @{t.concurrency}" for t in traces]
    lines = [
        [f"`{name}`"] + [f"{counts.get(name, 0.0):.2f}" for counts in per_event] for name in names
    ]
    lines.append(["**total**"] + [f"**{t.total_per_event:.1f}**" for t in traces])
    return _markdown(header, lines)


# --- the chart -------------------------------------------------------------------------------


def chart(
    rows: list[str],
    modes: list[str],
    concurrencies: list[int],
    summaries: dict[SummaryKey, Summary],
    path: Path,
    title: str,
) -> None:
    """Throughput, p99 and CPU per event by concurrency; a line per row and broker mode (disk
    solid, tmpfs dashed); (d), one thread, as a horizontal reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    figure, axes = plt.subplots(1, 3, figsize=(16, 5.6))
    metrics = (
        ("rate", "2xx answers per second"),
        ("p99_ms", "p99 latency, ms"),
        ("cpu_us", "server CPU per event, µs"),
    )
    colours = {row: f"C{n}" for n, row in enumerate(rows)}
    styles = {"disk": "-", "tmpfs": "--"}
    for axis, (metric, ylabel) in zip(axes, metrics, strict=True):
        for position, mode in enumerate(modes):
            for row in rows:
                # One legend entry per row (its colour); the line style tells the mode.
                label = f"({row}) {LABELS[row]}" if position == 0 else None
                style = styles.get(mode, ":")
                if row == RAW_ROW:
                    s = summaries.get((mode, row, 1))
                    value = getattr(s, metric) if s is not None else None
                    if value is not None:
                        axis.axhline(value, linestyle=style, color="grey", label=label)
                    continue
                points = [
                    (c, getattr(summaries[(mode, row, c)], metric))
                    for c in concurrencies
                    if (mode, row, c) in summaries
                ]
                points = [(c, v) for c, v in points if v is not None]
                if points:
                    xs, ys = [c for c, _ in points], [v for _, v in points]
                    axis.plot(xs, ys, style, color=colours[row], marker="o", label=label)
        axis.set_xscale("log", base=2)
        axis.set_xticks(concurrencies, [str(c) for c in concurrencies])
        axis.set_xlabel("concurrent clients")
        axis.set_yscale("log")
        axis.set_ylabel(f"{ylabel} (log)")
        axis.grid(True, alpha=0.3)
    axes[0].set_title("throughput")
    axes[1].set_title("p99 latency")
    axes[2].set_title("CPU per event (what Cloud Run bills)")
    figure.suptitle(title, fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    for mode in modes:
        handles.append(Line2D([], [], color="black", linestyle=styles.get(mode, ":")))
        labels.append(MODE_LABELS[mode])
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=7.5, frameon=False)
    figure.tight_layout(rect=(0, 0.2, 1, 0.95))
    figure.savefig(path, dpi=110)
    plt.close(figure)
