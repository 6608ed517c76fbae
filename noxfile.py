"""Developer sessions: `nox -s dev` runs every function locally, `nox -s tests` tests them.

Every session but bench runs in one virtualenv, .nox/venv, made by the `venv` session (which
they require, so nox runs it first, once per invocation) with requirements-lint.txt: the
functions' runtime, the test tools and the linters. It is reinstalled only when a requirements
file changes. bench keeps its own (its baselines need packages the rest must not see).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"

# uv makes and fills a venv in seconds; without it, the standard library's venv and pip. Chosen
# here rather than with nox's "uv|venv" fallback, which logs "uv binary not found" without uv.
VENV_BACKEND = "uv" if shutil.which("uv") else "venv"
# The interpreter nox itself runs on (3.11 or newer): no version a machine may lack.
PYTHON = None
LINTED = ["shared", "functions", "deploy", "tests", "bench", "noxfile.py"]
SHARED = "venv"  # the session whose virtualenv the others use
REQUIREMENTS = (
    "requirements-lint.txt"  # includes requirements-dev.txt, which includes the runtime's
)
STAMP = ".requirements.sha256"  # in the venv: what was last installed


def install(session: nox.Session, requirements: str) -> None:
    """Install a requirements file, saying so first: with pip, a first install takes minutes."""
    tool = "uv" if VENV_BACKEND == "uv" else "pip (install uv to make this faster)"
    session.log(f"installing {requirements} into {session.virtualenv.location} with {tool} ...")
    session.install("--quiet", "-r", requirements, env={"PIP_DISABLE_PIP_VERSION_CHECK": "1"})


def requirements_digest() -> str:
    """One digest of every requirements file and the interpreter: what the venv must hold."""
    digest = hashlib.sha256(sys.version.encode())
    for path in sorted(Path().glob("requirements*.txt")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@nox.session(name=SHARED, python=PYTHON, venv_backend=VENV_BACKEND, default=False)
def shared_venv(session: nox.Session) -> None:
    """The virtualenv every session but bench runs in (.nox/venv); required, so run first."""
    stamp = Path(session.virtualenv.location) / STAMP
    wanted = requirements_digest()
    if stamp.exists() and stamp.read_text() == wanted:
        session.log("requirements unchanged since the last install: nothing to install")
        return
    install(session, REQUIREMENTS)
    stamp.write_text(wanted)


def run(session: nox.Session, program: str, *args: str, **kwargs: Any) -> None:
    """Run `program` from the shared venv (these sessions have no venv of their own)."""
    venv = session.cache_dir.parent / SHARED  # nox's envdir (.nox by default), then the name
    if not (venv / STAMP).exists():
        session.error(f"{venv} is not made yet: run `nox -s {SHARED}` (or drop --no-deps)")
    path = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {"VIRTUAL_ENV": str(venv), "PATH": path}
    session.run(str(venv / "bin" / program), *args, env=env, external=True, **kwargs)


def in_shared_venv(func: Any) -> Any:
    """A session that runs in the shared venv, which nox makes (or updates) first."""
    return nox.session(python=False, requires=[SHARED])(func)


@in_shared_venv
def tests(session: nox.Session) -> None:
    """Unit and end-to-end tests against a private mutual-TLS RabbitMQ node."""
    run(session, "pytest", *session.posargs)


@in_shared_venv
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and mypy, strict on shared/."""
    run(session, "ruff", "check", *LINTED)
    run(session, "ruff", "format", "--check", *LINTED)
    run(session, "mypy", *LINTED)


def deploy_cli(session: nox.Session, *args: str) -> None:
    # On Ctrl-C nox would SIGKILL the child after half a second: give `local` time to stop
    # its functions and broker (it ignores further signals while it does).
    run(
        session,
        "python", "-m", "deploy", *args, *session.posargs,
        interrupt_timeout=2, terminate_timeout=60,
    )  # fmt: skip


@in_shared_venv
def dev(session: nox.Session) -> None:
    """Every function locally against a private mutual-TLS RabbitMQ node (`-- --cluster`: a
    three-node cluster), until Ctrl-C."""
    deploy_cli(session, "local")


@in_shared_venv
def stage(session: nox.Session) -> None:
    """Build one self-contained upload folder per function in build/."""
    deploy_cli(session, "stage")


@in_shared_venv
def deploy(session: nox.Session) -> None:
    """Deploy with gcloud (`nox -s deploy -- --dry-run` prints the commands only)."""
    deploy_cli(session, "deploy")


@in_shared_venv
def bootstrap(session: nox.Session) -> None:
    """A first deployment: APIs, account, secrets, connector, topology, deploy, a test alert."""
    deploy_cli(session, "bootstrap")


@in_shared_venv
def smoke(session: nox.Session) -> None:
    """One signed test alert to each deployed function, which must answer 202."""
    deploy_cli(session, "smoke")


@in_shared_venv
def topology(session: nox.Session) -> None:
    """Declare exchanges, queues and bindings on the broker given by the AMQP_* settings."""
    deploy_cli(session, "topology")


@nox.session(python=PYTHON, venv_backend=VENV_BACKEND)
def bench(session: nox.Session) -> None:
    """Benchmark event-relay against the alternatives (`-- --quick`, `-- --publish`); not a test."""
    if shutil.which("wrk") is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            session.error("wrk is missing: install it with `apt-get install -y wrk` (as root)")
        session.log("wrk is missing: installing it with apt-get (we are root)")
        session.run("apt-get", "install", "-y", "-qq", "wrk", external=True)
    install(session, "requirements-bench.txt")
    session.run("python", "-m", "bench", *session.posargs)
