"""The process id the fork guards read: current in a forked child, as gunicorn forks workers."""

from __future__ import annotations

import asyncio
import os

from shared.process import current_pid
from shared.publisher import Publisher


def in_a_forked_child(check: str) -> str:
    """Run `check` (a name below) in a child made by os.fork; its one-line answer."""
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # the child: answer, then leave without running the parent's cleanup
        try:
            answer = CHECKS[check]()
        except BaseException as error:  # reported to the parent as the answer
            answer = repr(error)
        os.write(writing, answer.encode())
        os._exit(0)
    os.close(writing)
    with os.fdopen(reading) as answer_pipe:
        answer = answer_pipe.read()
    os.waitpid(child, 0)
    return answer


PUBLISHER = Publisher("x", publish_timeout=1, parameters=list)


def _pid_is_the_childs() -> str:
    return "same" if current_pid() == os.getpid() else f"{current_pid()} != {os.getpid()}"


def _publisher_starts_afresh() -> str:
    async def claim() -> str:
        PUBLISHER._claim(asyncio.get_running_loop())
        return "own" if PUBLISHER._owner == (os.getpid(), asyncio.get_running_loop()) else "not"

    return asyncio.run(claim())


CHECKS = {"pid": _pid_is_the_childs, "publisher": _publisher_starts_afresh}


def test_the_process_id_is_the_childs_after_a_fork() -> None:
    assert current_pid() == os.getpid()
    assert in_a_forked_child("pid") == "same"


def test_a_forked_child_takes_the_publisher_over_from_its_parent_loop() -> None:
    """The parent's loop is alive, so the same process would be refused it; a child is not."""

    async def parent() -> str:
        PUBLISHER._claim(asyncio.get_running_loop())
        return in_a_forked_child("publisher")

    assert asyncio.run(parent()) == "own"
