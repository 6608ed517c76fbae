"""Ordered steps of shell commands: printed as a plan (`--dry-run`) or run, skipping what exists.

A step is a commented header line and the exact shell-quoted commands under it. A step may
have a check: a read-only command (`gcloud ... describe` or `list`) whose output says whether
what the step makes is already there; a real run then skips the step. A step may be blocked:
an input it needs is missing (a secret's file). The plan prints its commands commented out and
says why; a real run stops there, unless the check finds the thing already made.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from deploy import REPO
from deploy.manifest import MANIFEST

PYTHON = "python"  # how a printed command names the interpreter; a real run uses sys.executable


@dataclass(frozen=True)
class Command:
    """One command line; `env` is printed as NAME=value prefixes and added when it runs."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        prefix = [f"{name}={shlex.quote(value)}" for name, value in self.env.items()]
        return " ".join([*prefix, shlex.join(self.argv)])

    def run(self, *, capture: bool = False) -> subprocess.CompletedProcess[str]:
        argv = list(self.argv)
        if argv[0] == PYTHON:
            argv[0] = sys.executable
        return subprocess.run(
            argv,
            env={**os.environ, **self.env},
            cwd=REPO,  # `python -m deploy` needs the repository root
            capture_output=capture,
            text=True,
            check=False,
        )


def command(*argv: str, env: Mapping[str, str] | None = None) -> Command:
    return Command(tuple(argv), dict(env or {}))


def deploy_cli(manifest: Path) -> tuple[str, ...]:
    """`python -m deploy`, naming the manifest unless it is the repository's."""
    given = () if manifest.resolve() == MANIFEST else ("--manifest", str(manifest.resolve()))
    return (PYTHON, "-m", "deploy", *given)


@dataclass(frozen=True)
class Check:
    """A read-only command; what the step makes exists when it succeeds and `found(stdout)`."""

    command: Command
    found: Callable[[str], bool]
    means: str  # what `found` looks for, for the plan: "lists event-relay-amqp-url"


@dataclass(frozen=True)
class Step:
    title: str
    commands: tuple[Command, ...]
    check: Check | None = None
    blocked: str | None = None  # the missing input, and how to give it

    def header(self, number: int) -> str:
        return f"# {number}. {self.title}"


def print_plan(
    steps: Sequence[Step], *, notes: Iterable[str] = (), out: TextIO | None = None
) -> None:
    """The dry run: notes, then each step's header, check, and commands; nothing is run."""
    out = out or sys.stdout
    for note in notes:
        print(f"# {note}", file=out)
    for number, step in enumerate(steps, 1):
        print(step.header(number), file=out)
        if step.check:
            print(f"#    skipped when it {step.check.means}: {step.check.command}", file=out)
        if step.blocked:
            print(f"#    cannot run as printed: {step.blocked}", file=out)
        for cmd in step.commands:
            print(f"# {cmd}" if step.blocked else str(cmd), file=out)
    print("# dry run: nothing was run", file=out)


class StepFailedError(RuntimeError):
    """A step's command failed, or a blocked step had to run; the message names the step."""


def run_steps(steps: Sequence[Step], *, out: TextIO | None = None) -> tuple[int, int]:
    """Run the steps in order, each after its check; (steps run, steps skipped)."""
    out = out or sys.stdout
    # Steps share checks (one `secrets list` for every secret), so answers are kept: an answer
    # from before a step lacks only what later steps made, so what it finds is still there.
    answers: dict[str, subprocess.CompletedProcess[str]] = {}
    ran = skipped = 0
    for number, step in enumerate(steps, 1):
        print(step.header(number), file=out, flush=True)
        if step.check:
            key = str(step.check.command)
            if key not in answers:
                answers[key] = step.check.command.run(capture=True)
            answer = answers[key]
            if answer.returncode == 0 and step.check.found(answer.stdout):
                print("   already there: skipped", file=out, flush=True)
                skipped += 1
                continue
        if step.blocked:
            raise StepFailedError(f"step {number} ({step.title}) cannot run: {step.blocked}")
        for cmd in step.commands:
            print(f"+ {cmd}", file=out, flush=True)
            if code := cmd.run().returncode:
                raise StepFailedError(f"step {number} ({step.title}) failed ({code}): {cmd}")
        ran += 1
    return ran, skipped


def found(describe: Command, means: str) -> Check:
    """A check that passes when the command prints anything (--format=value(...) of a resource)."""
    return Check(describe, lambda out: bool(lines(out)), means)


def lines(stdout: str) -> list[str]:
    """The non-empty lines of a command's output (gcloud's --format=value(...))."""
    return [line.strip() for line in stdout.splitlines() if line.strip()]
