"""Turn the cells into the table, the ratios against the targets, the JSON and the chart."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load import Cell
from bench.rows import LABELS, RAW_ROW

TARGET_CONCURRENCY = 8
# (name, numerator row, denominator row, minimum)
THROUGHPUT_TARGETS = (
    ("a/f", "a", "f", 1.5),
    ("a/d", "a", "d", 2.0),
    ("a/b", "a", "b", 5.0),
    ("a/c", "a", "c", None),
    ("a/f+", "a", "f+", 1.0),
    ("f/d", "f", "d", None),
)
P99_OVER_P50_MAX = 4.0
COLD_START_RATIO_MAX = 1.25


@dataclass
class Summary:
    row: str
    concurrency: int
    rate: float
    rate_min: float
    rate_max: float
    p50_ms: float
    p99_ms: float
    ok: int
    failed: int
    non_2xx: dict[str, int]
    queue_mismatches: int
    rounds: int


def summarize(cells: list[Cell]) -> dict[tuple[str, int], Summary]:
    groups: dict[tuple[str, int], list[Cell]] = defaultdict(list)
    for cell in cells:
        groups[(cell.row, cell.concurrency)].append(cell)
    result = {}
    for key, group in groups.items():
        rates = [c.rate for c in group]
        non_2xx: dict[str, int] = defaultdict(int)
        for c in group:
            for status, n in c.non_2xx.items():
                non_2xx[status] += n
        result[key] = Summary(
            row=key[0],
            concurrency=key[1],
            rate=statistics.median(rates),
            rate_min=min(rates),
            rate_max=max(rates),
            p50_ms=statistics.median(c.p50_ms for c in group),
            p99_ms=statistics.median(c.p99_ms for c in group),
            ok=sum(c.ok for c in group),
            failed=sum(c.failed for c in group),
            non_2xx={k: v for k, v in non_2xx.items() if v},
            queue_mismatches=sum(not c.queue_ok for c in group),
            rounds=len(group),
        )
    return result


def ratios(cells: list[Cell]) -> dict[str, dict[str, Any]]:
    """Throughput ratios at concurrency 8, computed round by round (rows of one round ran side
    by side), with their median, range and target."""
    by_round: dict[int, dict[str, float]] = defaultdict(dict)
    for cell in cells:
        if cell.concurrency == TARGET_CONCURRENCY or cell.row == RAW_ROW:
            by_round[cell.round][cell.row] = cell.rate
    found: dict[str, dict[str, Any]] = {}
    for name, top, bottom, minimum in THROUGHPUT_TARGETS:
        values = [r[top] / r[bottom] for r in by_round.values() if r.get(bottom) and top in r]
        if not values:
            continue
        median = statistics.median(values)
        found[name] = {
            "median": median,
            "min": min(values),
            "max": max(values),
            "per_round": values,
            "target": minimum,
            "holds": None if minimum is None else median >= minimum,
            "holds_every_round": None if minimum is None else min(values) >= minimum,
        }
    return found


def latency_target(summaries: dict[tuple[str, int], Summary]) -> dict[str, Any] | None:
    summary = summaries.get(("a", TARGET_CONCURRENCY))
    if summary is None or summary.p50_ms <= 0:
        return None
    ratio = summary.p99_ms / summary.p50_ms
    return {"median": ratio, "target": P99_OVER_P50_MAX, "holds": ratio <= P99_OVER_P50_MAX}


def cold_start_target(cold: dict[str, list[float]]) -> dict[str, Any] | None:
    if not cold.get("a") or not cold.get("c"):
        return None
    hello = statistics.median(cold["c"])
    ratio = statistics.median(cold["a"]) / hello
    floor = statistics.median(cold["i"]) / hello if cold.get("i") else None
    return {
        "median": ratio,
        "target": COLD_START_RATIO_MAX,
        "holds": ratio <= COLD_START_RATIO_MAX,
        "import_floor_i_c": floor,
    }


def _fmt_rate(s: Summary | None) -> str:
    if s is None:
        return "—"
    spread = f" ({s.rate_min:,.0f}-{s.rate_max:,.0f})" if s.rounds > 1 else ""
    return f"{s.rate:,.0f}{spread}"


def _fmt_latency(s: Summary | None) -> str:
    return "—" if s is None else f"{s.p50_ms:.1f} / {s.p99_ms:.1f}"


def table(
    rows: list[str],
    concurrencies: list[int],
    summaries: dict[tuple[str, int], Summary],
    cold: dict[str, list[float]],
    rss_kib: dict[str, int],
) -> str:
    header = ["row"]
    for c in concurrencies:
        header += [f"req/s @{c}", f"p50 / p99 ms @{c}"]
    header += ["cold start s", "peak RSS MiB", "errors"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"({row}) {LABELS[row]}"]
        for c in concurrencies:
            s = summaries.get((row, 1 if row == RAW_ROW else c))
            if row == RAW_ROW and c != concurrencies[0]:
                s = None  # one thread: shown once
            cells += [_fmt_rate(s), _fmt_latency(s)]
        cells.append(f"{statistics.median(cold[row]):.3f}" if cold.get(row) else "—")
        cells.append(f"{rss_kib[row] / 1024:.0f}" if rss_kib.get(row) else "—")
        cells.append(_errors(row, summaries))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _errors(row: str, summaries: dict[tuple[str, int], Summary]) -> str:
    notes = []
    for (name, c), s in sorted(summaries.items()):
        if name != row:
            continue
        if s.failed:
            detail = ", ".join(f"{k}: {v}" for k, v in s.non_2xx.items())
            notes.append(f"@{c}: {s.failed} failed ({detail})" if detail else f"@{c}: {s.failed}")
        if s.queue_mismatches:
            notes.append(f"@{c}: queue depth ≠ 2xx in {s.queue_mismatches} round(s)")
    return "; ".join(notes) or "none"


def targets_text(
    found: dict[str, dict[str, Any]], latency: dict[str, Any] | None, cold: dict[str, Any] | None
) -> str:
    lines = [
        f"Ratios of throughput at concurrency {TARGET_CONCURRENCY}, round by round (median, range):"
    ]
    for name, r in found.items():
        verdict = ""
        if r["target"] is not None:
            verdict = f"  target ≥ {r['target']:g}: {'HOLDS' if r['holds'] else 'MISSED'}" + (
                "" if r["holds_every_round"] else " (not in every round)"
            )
        lines.append(f"  {name:6} {r['median']:6.2f}  ({r['min']:.2f}-{r['max']:.2f}){verdict}")
    if latency is not None:
        lines.append(
            f"  p99/p50 of (a) at {TARGET_CONCURRENCY}: {latency['median']:.2f}  "
            f"target ≤ {latency['target']:g}: {'HOLDS' if latency['holds'] else 'MISSED'}"
        )
    if cold is not None:
        lines.append(
            f"  cold start a/c: {cold['median']:.2f}  target ≤ {cold['target']:g}: "
            f"{'HOLDS' if cold['holds'] else 'MISSED'}"
        )
        if cold["import_floor_i_c"] is not None:
            lines.append(
                f"  cold start i/c: {cold['import_floor_i_c']:.2f}  (the floor for any function "
                "importing pydantic and pika)"
            )
    return "\n".join(lines)


def chart(
    rows: list[str],
    concurrencies: list[int],
    summaries: dict[tuple[str, int], Summary],
    path: Path,
    title: str,
) -> None:
    """Throughput and p99 by concurrency, one line per row; (d) as a horizontal reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for row in rows:
        if row == RAW_ROW:
            s = summaries.get((row, 1))
            if s is not None:
                left.axhline(s.rate, linestyle="--", color="grey", label=f"({row}) {LABELS[row]}")
                right.axhline(s.p99_ms, linestyle="--", color="grey")
            continue
        points = [(c, summaries[(row, c)]) for c in concurrencies if (row, c) in summaries]
        if not points:
            continue
        xs = [c for c, _ in points]
        style = "-" if "+" not in row else ":"
        label = f"({row}) {LABELS[row]}"
        left.plot(xs, [s.rate for _, s in points], style, marker="o", label=label)
        right.plot(xs, [s.p99_ms for _, s in points], style, marker="o")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(concurrencies, [str(c) for c in concurrencies])
        axis.set_xlabel("concurrent clients")
        axis.grid(True, alpha=0.3)
    left.set_ylabel("2xx answers per second, median of rounds (log)")
    left.set_yscale("log")
    right.set_ylabel("p99 latency, ms (log)")
    right.set_yscale("log")
    left.set_title("throughput")
    right.set_title("p99 latency")
    figure.suptitle(title, fontsize=10)
    figure.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.17, 1, 0.95))
    figure.savefig(path, dpi=110)
    plt.close(figure)
