"""Where the benchmark's broker keeps its data: the two broker modes of a run.

disk   the node's data on a disk, as every real broker has it: persistent messages with
       confirms wait for the broker's fsyncs, so the broker's disk can be the limit
tmpfs  the node's data on a tmpfs (RAM): the fsyncs cost nothing, the broker is not the
       limit, and the cells measure the servers' own code. A device of the benchmark only:
       no broker should run like this, and none of event-relay's guarantees would hold.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.machine import filesystem_of
from deploy import REPO

MODES = ("disk", "tmpfs")
LABELS = {
    "disk": "broker data on disk (what users get)",
    "tmpfs": "broker data on a tmpfs (a benchmark device: the broker is not the limit)",
}
SHM = Path("/dev/shm")  # noqa: S108 - checked to be a tmpfs; the folders in it are private
MIN_TMPFS_FREE_BYTES = 1 << 30  # RabbitMQ raises a disk alarm below 50 MB free; keep far off
MEMORY_FILESYSTEMS = ("tmpfs", "ramfs")
ON_DISK_FALLBACK = REPO / "bench" / "results"  # when the temp folder itself is a tmpfs


class ModeUnavailable(RuntimeError):
    """This machine has no place for the broker's data that fits the mode."""


@dataclass(frozen=True)
class BrokerMode:
    name: str
    root: Path  # a fresh folder on the mode's file system, removed afterwards
    filesystem: str
    device: str

    @property
    def label(self) -> str:
        return LABELS[self.name]

    def describe(self) -> str:
        return f"{self.label}: {self.filesystem} on {self.device}"

    def as_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "label": self.label,
            "filesystem": self.filesystem,
            "device": self.device,
        }


def _parent_for(name: str) -> Path:
    if name == "tmpfs":
        fs_type, _ = filesystem_of(SHM)
        if fs_type not in MEMORY_FILESYSTEMS:
            raise ModeUnavailable(f"{SHM} is not a tmpfs here ({fs_type})")
        if shutil.disk_usage(SHM).free < MIN_TMPFS_FREE_BYTES:
            raise ModeUnavailable(f"{SHM} has less than 1 GiB free")
        return SHM
    temp = Path(tempfile.gettempdir())
    if filesystem_of(temp)[0] not in MEMORY_FILESYSTEMS:
        return temp
    ON_DISK_FALLBACK.mkdir(parents=True, exist_ok=True)
    if filesystem_of(ON_DISK_FALLBACK)[0] in MEMORY_FILESYSTEMS:
        raise ModeUnavailable(f"both {temp} and {ON_DISK_FALLBACK} are in memory")
    return ON_DISK_FALLBACK


@contextmanager
def broker_mode(name: str) -> Iterator[BrokerMode]:
    """A fresh folder for the broker's data in mode `name`; removed on the way out."""
    if name not in MODES:
        raise ValueError(f"unknown broker mode {name!r}; choose from {', '.join(MODES)}")
    parent = _parent_for(name)
    with tempfile.TemporaryDirectory(prefix=f"event-relay-bench-{name}-", dir=parent) as folder:
        root = Path(folder)
        os.chmod(root, 0o700)
        fs_type, device = filesystem_of(root)
        yield BrokerMode(name, root, fs_type, device)
