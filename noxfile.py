"""Developer sessions: `nox -s dev` runs every function locally, `nox -s tests` tests them."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"
LINTED = ["shared", "functions", "deploy", "tests", "noxfile.py"]


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
