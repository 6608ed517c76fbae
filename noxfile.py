"""Developer sessions: `nox -s dev` runs every function locally, `nox -s tests` tests them."""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"
nox.options.default_venv_backend = "venv"

# The interpreter nox itself runs on (3.11 or newer): no version a machine may lack.
PYTHON = None
LINTED = ["shared", "functions", "deploy", "tests", "bench", "noxfile.py"]


def install(session: nox.Session, requirements: str) -> None:
    session.install("--quiet", "--disable-pip-version-check", "-r", requirements)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit and end-to-end tests against a private mutual-TLS RabbitMQ node."""
    install(session, "requirements-dev.txt")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and mypy, strict on shared/."""
    install(session, "requirements-lint.txt")
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)
    session.run("mypy", *LINTED)


def deploy_cli(session: nox.Session, *args: str) -> None:
    install(session, "requirements-dev.txt")
    # On Ctrl-C nox would SIGKILL the child after half a second: give `local` time to stop
    # its functions and broker (it ignores further signals while it does).
    session.run(
        "python", "-m", "deploy", *args, *session.posargs, interrupt_timeout=2, terminate_timeout=60
    )


@nox.session(python=PYTHON)
def dev(session: nox.Session) -> None:
    """Every function locally against a private mutual-TLS RabbitMQ node (`-- --cluster`: a
    three-node cluster), until Ctrl-C."""
    deploy_cli(session, "local")


@nox.session(python=PYTHON)
def stage(session: nox.Session) -> None:
    """Build one self-contained upload folder per function in build/."""
    deploy_cli(session, "stage")


@nox.session(python=PYTHON)
def deploy(session: nox.Session) -> None:
    """Deploy with gcloud (`nox -s deploy -- --dry-run` prints the commands only)."""
    deploy_cli(session, "deploy")


@nox.session(python=PYTHON)
def topology(session: nox.Session) -> None:
    """Declare exchanges, queues and bindings on the broker given by the AMQP_* settings."""
    deploy_cli(session, "topology")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmark event-relay against the alternatives (`-- --quick`, `-- --publish`); not a test."""
    if shutil.which("wrk") is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            session.error("wrk is missing: install it with `apt-get install -y wrk` (as root)")
        session.log("wrk is missing: installing it with apt-get (we are root)")
        session.run("apt-get", "install", "-y", "-qq", "wrk", external=True)
    install(session, "requirements-bench.txt")
    session.run("python", "-m", "bench", *session.posargs)
