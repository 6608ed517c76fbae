"""Profile row (a) under load with py-spy, and say where the time goes.

py-spy samples the worker process (`--nonblocking`, so the worker is not paused) while wrk loads
it; the stacks are then grouped by the module each frame belongs to: the HTTP stack, pydantic,
JSON, logging, pika, TLS, asyncio, our pipeline. Shares are of the samples in which the worker
ran Python code (idle waits in epoll are not sampled).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# First match wins: (category, substrings of the frame's file path).
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("our pipeline (shared/)", ("/shared/", "/functions/")),
    ("pydantic", ("/pydantic/", "/pydantic_core/", "/pydantic_settings/")),
    ("logging", ("/logging/", "/pythonjsonlogger/")),
    ("JSON", ("/json/",)),
    ("pika (AMQP)", ("/pika/",)),
    ("TLS (ssl)", ("/ssl.py",)),
    (
        "HTTP stack (uvicorn, h11, starlette, functions-framework)",
        (
            "/uvicorn/",
            "/h11/",
            "/httptools/",
            "/starlette/",
            "/functions_framework/",
            "/uvicorn_worker/",
            "/gunicorn/",
            "/anyio/",
        ),
    ),
    ("asyncio event loop", ("/asyncio/", "/selectors.py", "/uvloop/")),
)
OTHER = "other (stdlib, uuid, datetime, ...)"


@dataclass
class Profile:
    samples: int = 0
    self_by_category: Counter[str] = field(default_factory=Counter)
    inclusive_by_category: Counter[str] = field(default_factory=Counter)
    self_by_function: Counter[str] = field(default_factory=Counter)
    inclusive_by_function: Counter[str] = field(default_factory=Counter)

    def shares(self, counter: Counter[str], top: int = 12) -> list[tuple[str, float]]:
        total = max(self.samples, 1)
        return [(name, 100.0 * n / total) for name, n in counter.most_common(top)]

    def as_json(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "self_by_category_pct": dict(self.shares(self.self_by_category, 20)),
            "inclusive_by_category_pct": dict(self.shares(self.inclusive_by_category, 20)),
            "self_by_function_pct": dict(self.shares(self.self_by_function, 25)),
            "inclusive_by_function_pct": dict(self.shares(self.inclusive_by_function, 25)),
        }


def category(frame: str) -> str:
    path = _frame_path(frame)
    for name, needles in CATEGORIES:
        if any(needle in path for needle in needles):
            return name
    return OTHER


def _frame_path(frame: str) -> str:
    """`function (path/to/file.py)` or `function (path/to/file.py:12)` -> the path."""
    inside = frame[frame.rfind("(") + 1 :].rstrip(")")
    return inside.rsplit(":", 1)[0] if inside.rsplit(":", 1)[-1].isdigit() else inside


def _short(frame: str) -> str:
    name, _, rest = frame.partition(" (")
    path = _frame_path(frame)
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/", "/scratch/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if rest else name


def parse_raw(text: str) -> Profile:
    """py-spy's raw (collapsed) format: `frame;frame;...;leaf COUNT` per line, root first."""
    profile = Profile()
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        profile.samples += count
        leaf = frames[-1]
        profile.self_by_category[category(leaf)] += count
        profile.self_by_function[_short(leaf)] += count
        for name in {category(f) for f in frames}:
            profile.inclusive_by_category[name] += count
        for name in {_short(f) for f in frames}:
            profile.inclusive_by_function[name] += count
    return profile


def record(pid: int, seconds: int, output: Path) -> Profile | None:
    """Sample `pid` for `seconds`; None (with a note) when py-spy is missing or not allowed."""
    # Installed in the bench's environment, whose bin folder is on PATH only under nox.
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        print("profile skipped: py-spy is not installed (pip install py-spy)")
        return None
    command = [
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        "200",
        "--nonblocking",
        "--format",
        "raw",
        "--full-filenames",
        "--nolineno",
        "--output",
        str(output),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not output.exists():
        print(f"profile skipped: py-spy failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        return None
    return parse_raw(output.read_text())


def markdown(profile: Profile) -> str:
    lines = [
        f"Where (a)'s worker spends its CPU ({profile.samples} py-spy samples under load):",
        "",
        "| module group | self % | inclusive % |",
        "|---|---:|---:|",
    ]
    for name, share in profile.shares(profile.self_by_category, 20):
        inclusive = 100.0 * profile.inclusive_by_category[name] / max(profile.samples, 1)
        lines.append(f"| {name} | {share:.1f} | {inclusive:.1f} |")
    lines += ["", "| hottest functions (self) | % |", "|---|---:|"]
    lines += [
        f"| `{name}` | {share:.1f} |"
        for name, share in profile.shares(profile.self_by_function, 15)
    ]
    return "\n".join(lines)
