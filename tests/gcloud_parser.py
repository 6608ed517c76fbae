"""Check printed gcloud commands with the real gcloud's argument parser, many at once.

gcloud parses a command's arguments (flags, their values, filters, files named by
`--data-file`) before it looks for credentials. Run without an account, a well-formed command
therefore stops at "You do not currently have an active account selected"; an unknown flag or a
bad value stops earlier, with its own error. The commands run with a configuration folder of
their own (nothing of a developer's gcloud set-up leaks in) and prompts off; none reaches the
network.

A gcloud process spends a second or more loading before it parses anything, so by default the
commands run in children forked from one gcloud that loaded its CLI once (tests/gcloud_driver.py,
under gcloud's own Python), a few at a time; `forked=False` runs one `gcloud` process per command
on a thread pool instead (what the forked way is checked against).

    verdicts = parse_with_gcloud([["gcloud", "pubsub", "topics", "create", "t", ...], ...])
    assert [str(v) for v in verdicts if not v.parsed] == []
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

GCLOUD = shutil.which("gcloud")
DRIVER = Path(__file__).with_name("gcloud_driver.py")
PARSED = "You do not currently have an active account selected"  # the first check after parsing
NO_GCLOUD = "gcloud is not installed: the printed commands cannot be checked by its parser"
# Commands that name no --project get one, as a developer's own configuration would.
DEFAULT_PROJECT = "parser-check-project"
JOBS = min(4, 2 * (os.cpu_count() or 1))  # more only adds contention on a small machine


@dataclass(frozen=True)
class Verdict:
    argv: tuple[str, ...]
    parsed: bool  # got past argument parsing
    error: str  # gcloud's first error line

    def __str__(self) -> str:
        return f"{'ok' if self.parsed else 'REFUSED'}: {' '.join(self.argv)}\n  {self.error}"


def parse_with_gcloud(commands: Iterable[Sequence[str]], *, forked: bool = True) -> list[Verdict]:
    """One verdict per distinct command (each starting with "gcloud"), in the order given."""
    if GCLOUD is None:
        raise RuntimeError(NO_GCLOUD)
    distinct = list(dict.fromkeys(tuple(argv) for argv in commands))
    for argv in distinct:
        if argv[0] != "gcloud":
            raise ValueError(f"not a gcloud command: {argv}")
    with tempfile.TemporaryDirectory(prefix="gcloud-parse-") as scratch:
        if forked:
            stderrs = _forked(distinct, Path(scratch))
        else:
            with ThreadPoolExecutor(JOBS) as pool:
                stderrs = list(pool.map(_one_process, distinct))
    return [_verdict(argv, code, err) for argv, (code, err) in zip(distinct, stderrs, strict=True)]


def _env(config: Path) -> dict[str, str]:
    config.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(config),
        "CLOUDSDK_CONFIG": str(config),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_PROJECT": DEFAULT_PROJECT,
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
    }


def _one_process(argv: tuple[str, ...]) -> tuple[int, str]:
    with tempfile.TemporaryDirectory(prefix="gcloud-config-") as config:
        done = subprocess.run(
            [str(GCLOUD), *argv[1:]],
            env=_env(Path(config)), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
    return done.returncode, done.stderr


def _forked(commands: list[tuple[str, ...]], scratch: Path) -> list[tuple[int, str]]:
    root, python = _installation()
    done = subprocess.run(
        [python, "-S", str(DRIVER), str(JOBS), str(scratch)],
        env={**_env(scratch / "config"), "CLOUDSDK_ROOT_DIR": root},
        input=json.dumps(commands), capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    status = {int(number): code for number, code in json.loads(done.stdout).items()}
    return [(status[n], (scratch / f"{n}.err").read_text()) for n in range(len(commands))]


@cache
def _installation() -> tuple[str, str]:
    """(the SDK's root folder, the Python gcloud runs on), as gcloud itself reports them."""
    with tempfile.TemporaryDirectory(prefix="gcloud-config-") as config:
        done = subprocess.run(
            [str(GCLOUD), "info", "--format=value(installation.sdk_root,basic.python_location)"],
            env=_env(Path(config)), capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
    root, python = done.stdout.strip().split("\t")
    return root, python


def _verdict(argv: tuple[str, ...], code: int, stderr: str) -> Verdict:
    lines = [line for line in stderr.splitlines() if line.strip()]
    error = next((line for line in lines if line.startswith("ERROR:")), lines[0] if lines else "")
    return Verdict(argv, code != 0 and PARSED in stderr, error)
