"""The ratios between rows, round by round, and the targets they are held to (issue 16).

A ratio compares two rows of the same round, broker mode and concurrency: those cells ran side
by side, minutes apart at most, so whatever else the machine did weighs on both. The median over
the rounds is what a target is checked against; the range says how steady it was.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.load import Cell
from bench.rows import RAW_ROW

Metric = Literal["rate", "cpu_us", "p99_ms"]
METRIC_NAMES: dict[Metric, str] = {
    "rate": "throughput",
    "cpu_us": "CPU per event",
    "p99_ms": "p99 latency",
}
TIMES = "\N{MULTIPLICATION SIGN}"
RAW_BESIDE = 8  # row (d) is one thread: measured once a round, beside the cells at 8


@dataclass
class Check:
    """One ratio in one broker mode at one concurrency, with its target when it has one."""

    metric: str  # "throughput", "CPU per event", "p99 latency", "cold start"
    top: str
    bottom: str
    mode: str | None
    concurrency: int | None
    values: list[float]  # one per round (or per launch, for the cold start)
    limit: float | None = None
    at_most: bool = False  # the target is "≤ limit" (else "≥ limit")
    source: str = "issue 16"
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> str:
        return f"{self.top}/{self.bottom}"

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def _meets(self, value: float) -> bool:
        assert self.limit is not None
        return value <= self.limit if self.at_most else value >= self.limit

    @property
    def holds(self) -> bool | None:
        median = self.median
        return None if self.limit is None or median is None else self._meets(median)

    @property
    def holds_every_round(self) -> bool | None:
        if self.limit is None or not self.values:
            return None
        return all(self._meets(v) for v in self.values)

    @property
    def target(self) -> str:
        if self.limit is None:
            return ""
        sign = "≤" if self.at_most else "≥"
        if self.metric == "throughput" and self.limit == 1.0:
            return f"{self.top} ≥ {self.bottom}"
        return f"{self.top} {sign} {self.limit:g} {TIMES} {self.bottom}"

    def as_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "ratio": self.ratio,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "values": self.values,
            "median": self.median,
            "min": min(self.values) if self.values else None,
            "max": max(self.values) if self.values else None,
            "target": self.target or None,
            "holds": self.holds,
            "holds_every_round": self.holds_every_round,
            "source": self.source,
        }


def _value(cell: Cell, metric: Metric) -> float | None:
    value = getattr(cell, metric)
    return None if value is None or value <= 0 else float(value)


class Rounds:
    """The cells by broker mode, round, row and concurrency."""

    def __init__(self, cells: list[Cell]) -> None:
        self._cells: dict[tuple[str, int, str, int], Cell] = {}
        self.rounds: dict[str, set[int]] = defaultdict(set)
        for cell in cells:
            if cell.round >= 0:  # warm-ups and profiles are not rounds
                self._cells[(cell.mode, cell.round, cell.row, cell.concurrency)] = cell
                self.rounds[cell.mode].add(cell.round)

    def ratios(
        self, metric: Metric, top: str, bottom: str, mode: str, concurrency: int
    ) -> list[float]:
        """top / bottom in every round of `mode` that has both cells."""
        values = []
        for number in sorted(self.rounds[mode]):
            pair = [self._cell(mode, number, row, concurrency) for row in (top, bottom)]
            if pair[0] is None or pair[1] is None:
                continue
            numerator, denominator = _value(pair[0], metric), _value(pair[1], metric)
            if numerator is not None and denominator is not None:
                values.append(numerator / denominator)
        return values

    def _cell(self, mode: str, number: int, row: str, concurrency: int) -> Cell | None:
        if row == RAW_ROW:
            return self._cells.get((mode, number, row, 1)) if concurrency == RAW_BESIDE else None
        return self._cells.get((mode, number, row, concurrency))

    def check(
        self,
        metric: Metric,
        top: str,
        bottom: str,
        mode: str,
        concurrency: int,
        limit: float | None = None,
        *,
        at_most: bool = False,
        source: str = "issue 16",
    ) -> Check:
        return Check(
            METRIC_NAMES[metric],
            top,
            bottom,
            mode,
            concurrency,
            self.ratios(metric, top, bottom, mode, concurrency),
            limit,
            at_most,
            source,
        )


def targets(
    cells: list[Cell],
    cold: dict[str, list[float]],
    *,
    modes: list[str],
    concurrencies: list[int],
    deployed: int,
) -> list[Check]:
    """Every target of issue 16 that this run measured, with its verdict."""
    rounds = Rounds(cells)
    found: list[Check] = []
    key = [c for c in (RAW_BESIDE, deployed) if c in concurrencies]
    # The bare function on (a)'s own HTTP stack, when measured: the issue's figures for the
    # hello world (70-78 µs) are those of c+, not of c without uvloop and httptools (~160).
    bare = "c+" if any(cell.row == "c+" for cell in cells) else "c"
    for mode in modes:
        for c in key:
            found.append(rounds.check("cpu_us", "a", bare, mode, c, 3.0, at_most=True))
            found.append(rounds.check("cpu_us", "a", "f", mode, c, 0.4, at_most=True))
    if "tmpfs" in modes:
        found += [rounds.check("rate", "a", "f", "tmpfs", c, 2.0) for c in key]
    if "disk" in modes:
        found += [rounds.check("rate", "a", "f", "disk", c, 1.0) for c in concurrencies]
    if deployed in concurrencies:
        found += [
            rounds.check("p99_ms", "a", "f", mode, deployed, 0.5, at_most=True) for mode in modes
        ]
    found.append(cold_check("a", "i", cold, 1.10))
    return [check for check in found if check.values]


def cold_check(top: str, bottom: str, cold: dict[str, list[float]], limit: float | None) -> Check:
    """The ratio of the rows' median cold starts (their launches were interleaved)."""
    if not cold.get(top) or not cold.get(bottom):
        return Check("cold start", top, bottom, None, None, [], limit, at_most=True)
    ratio = statistics.median(cold[top]) / statistics.median(cold[bottom])
    return Check("cold start", top, bottom, None, None, [ratio], limit, at_most=True)


def earlier_targets(cells: list[Cell], *, modes: list[str]) -> list[Check]:
    """Issue 6's throughput targets at concurrency 8, still printed for comparison."""
    rounds = Rounds(cells)
    mode = "disk" if "disk" in modes else modes[0]
    found = [
        rounds.check("rate", "a", "d", mode, 8, 2.0, source="issue 6"),
        rounds.check("rate", "a", "b", mode, 8, 5.0, source="issue 6"),
        rounds.check("rate", "a", "f+", mode, 8, 1.0, source="issue 6 (stretch)"),
    ]
    return [check for check in found if check.values]


def ratio_grid(
    cells: list[Cell], *, modes: list[str], concurrencies: list[int], candidate: bool
) -> list[tuple[str, dict[tuple[str, int], float | None]]]:
    """Median ratios by (mode, concurrency), one line per comparison, for the ratios table."""
    rounds = Rounds(cells)
    lines: list[tuple[Metric, str, str]] = [
        ("rate", "a", "f"),
        ("cpu_us", "a", "f"),
        ("cpu_us", "a", "c"),
        ("cpu_us", "a", "c+"),
        ("p99_ms", "a", "f"),
        ("rate", "a", "c"),
    ]
    if candidate:
        lines += [("rate", "x", "a"), ("cpu_us", "x", "a"), ("p99_ms", "x", "a")]
    grid = []
    for metric, top, bottom in lines:
        values: dict[tuple[str, int], float | None] = {}
        for mode in modes:
            for c in concurrencies:
                found = rounds.ratios(metric, top, bottom, mode, c)
                values[(mode, c)] = statistics.median(found) if found else None
        if any(v is not None for v in values.values()):
            grid.append((f"{METRIC_NAMES[metric]} {top}/{bottom}", values))
    return grid
