"""Run a callback on SIGTERM (Cloud Run's stop signal) in a functions-framework ASGI worker.

The ASGI mode (gunicorn with uvicorn's worker) gives the app no lifespan hook, and `atexit`
never runs in the worker: uvicorn catches SIGTERM, drains the requests in flight, restores the
default handler and raises SIGTERM again, which ends the process on the spot. So the first
request of each worker puts a handler in front of uvicorn's: it runs the callback on the event
loop, then hands the signal on to uvicorn, whose graceful drain happens as before.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable
from types import FrameType

from shared.process import current_pid

_installed_in_pid: int | None = None


_tasks: set[asyncio.Future[None]] = set()  # the loop keeps only weak references to tasks


def call_on_sigterm(callback: Callable[[], Awaitable[None]]) -> None:
    """Once per process: on SIGTERM, await `callback()` on the running loop, then call the
    previous handler. Called by every request: after the first, it costs one comparison.

    Only in front of a server's own Python handler (uvicorn's): where SIGTERM still has its
    default meaning, or outside the main thread (a test client), nothing is installed.
    """
    global _installed_in_pid
    if _installed_in_pid == current_pid():
        return
    _installed_in_pid = current_pid()
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return
    loop = asyncio.get_running_loop()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        def start() -> None:
            task = asyncio.ensure_future(callback())
            _tasks.add(task)
            # uvicorn stops only once the callback is done: an idle connection is closed
            # before uvicorn exits; with requests in flight the callback returns at once.
            task.add_done_callback(_tasks.discard)
            task.add_done_callback(lambda _: previous(signum, frame))

        # A signal handler runs between two bytecodes of the loop's own thread:
        # call_soon_threadsafe only queues `start` and wakes the loop up.
        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop is closed: nothing left to close
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
