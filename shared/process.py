"""This process's id, without a system call: os.getpid() is one, and the request path's fork
guards asked for it several times per request. A fork hook keeps it current in the child."""

from __future__ import annotations

import os

_pid = os.getpid()


def current_pid() -> int:
    """os.getpid(), as of the last fork (gunicorn forks its workers with os.fork)."""
    return _pid


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)
