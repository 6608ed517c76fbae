"""What the benchmark ran on, and how busy the machine was with other work meanwhile."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

PACKAGES = (
    "functions-framework",
    "gunicorn",
    "uvicorn",
    "uvicorn-worker",
    "starlette",
    "pika",
    "pydantic",
    "aio-pika",
    "fastapi",
    "flask",
    "uvloop",
    "httptools",
)
TICKS = os.sysconf("SC_CLK_TCK")


_VERSIONS = """
import json, sys
from importlib import metadata
def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
packages = {name: version(name) for name in sys.argv[1:]}
print(json.dumps({"python": sys.version.split()[0], "packages": packages}))
"""


def describe(rabbitmq_version: str, python: str = sys.executable) -> dict[str, object]:
    """The machine, and the interpreter the rows run on with its packages' versions."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    found = subprocess.run(
        [python, "-c", _VERSIONS, *PACKAGES], capture_output=True, text=True, check=True
    )
    interpreter = json.loads(found.stdout)
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": interpreter["python"],
        "python_path": python,
        "rabbitmq": rabbitmq_version,
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else "",
        "packages": interpreter["packages"],
        "load_average_at_start": os.getloadavg(),
    }


def _busy_ticks() -> int:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return user + nice + system + irq + softirq + steal


def _process_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(stat[11]) + int(stat[12])  # utime, stime
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU the processes have used so far, all their threads included.

    /proc counts in clock ticks (10 ms here): a cell must use seconds of CPU for a figure
    per event to be accurate to about a per cent.
    """
    return _process_ticks(pids) / TICKS


def rss_kib(pid: int) -> int:
    """The process's resident memory now (VmRSS), 0 when it is gone."""
    return _status_kib(pid, "VmRSS:")


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident memory (VmHWM), 0 when it is gone."""
    return _status_kib(pid, "VmHWM:")


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def filesystem_of(path: Path) -> tuple[str, str]:
    """(type, device) of the mount holding `path`, from /proc/mounts: the longest match wins."""
    target = str(path.resolve())
    best = ("", "unknown", "unknown")
    for line in Path("/proc/mounts").read_text().splitlines():
        device, mount_point, fs_type = line.split()[:3]
        mount_point = mount_point.replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best[0]):
            best = (mount_point, fs_type, device)
    return best[1], best[2]


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuWindow:
    """CPU used during a cell: by our processes (servers, broker, load generator), by the rest.

    Call `start(pids)` before and `stop(pids)` after; the load generator is a child that has
    exited by then, so its CPU comes from RUSAGE_CHILDREN.
    """

    def __init__(self) -> None:
        self._machine = self._ours = 0
        self._children = 0.0

    def start(self, pids: list[int]) -> None:
        self._machine, self._ours = _busy_ticks(), _process_ticks(pids)
        self._children = _children_seconds()

    def stop(self, pids: list[int], elapsed: float) -> dict[str, float]:
        machine = (_busy_ticks() - self._machine) / TICKS
        ours = (_process_ticks(pids) - self._ours) / TICKS + _children_seconds() - self._children
        elapsed = max(elapsed, 1e-9)
        return {
            "machine_cores": round(machine / elapsed, 2),
            "ours_cores": round(ours / elapsed, 2),
            "others_cores": round(max(0.0, machine - ours) / elapsed, 2),
        }


def process_tree(root: int) -> list[int]:
    """root and all its descendants. One that exits while they are listed is skipped: the
    broker runs `df` in a short-lived child every few seconds."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            tasks = list(Path(f"/proc/{pid}/task").glob("*/children"))
        except OSError:  # exited meanwhile
            continue
        found.append(pid)
        for task in tasks:
            try:
                todo.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue
    return found
