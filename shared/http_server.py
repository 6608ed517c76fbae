"""How uvicorn serves our functions: each POST straight to the function, each answer in one write.

functions-framework puts a Starlette app in front of the function: two middlewares of its own
(a random execution id for every request, an exception handler) and Starlette's two, a router
matching four routes, and its request-response wrapper; uvicorn adds its proxy-headers
middleware, which rewrites the client address nothing of ours reads. Every POST ends at the
function anyway, which checks the method itself, catches its own errors and logs no execution
id, so our protocol hands POSTs to it directly and leaves every other method to
functions-framework's app (its 404 for /robots.txt, ...). Measured against the code before it
(`--candidate`, 5 interleaved rounds in each broker mode): -12 to -17 % CPU per event at 8 and
at 80 clients, +5 to +18 % throughput.

uvicorn writes an answer's head (status line and headers) and its body with two transport
writes, so every 202 would cost two send() calls, and two TCP segments to the caller. Our
protocol holds a connection's writes until the end of the event loop's turn and sends them as
one (as `shared.amqp_connection` does for AMQP frames). Measured (`nox -s bench -- --candidate`,
5 interleaved rounds in each broker mode): -10 to -17 % CPU per event and +14 to +22 %
throughput at the deployed concurrency of 80; at 8 clients within the noise.

Everything else is uvicorn's own httptools protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import uvicorn_worker
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HttpFunction = Callable[[Request], Awaitable[Response]]


class TurnBufferedTransport:
    """A transport whose writes within one loop turn leave in one write, in their order."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def close(self) -> None:
        self._flush()  # what was written before a close goes out before it, as it would have
        self._transport.close()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, get_extra_info, pause_reading, ...) is the transport's.
        return getattr(self._transport, name)


class OneWritePerTurnProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing through a TurnBufferedTransport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        buffered = TurnBufferedTransport(transport, self.loop)
        super().connection_made(buffered)  # type: ignore[arg-type]


class PostsToFunction:
    """An ASGI app: a POST goes straight to the function, anything else to `app`."""

    __slots__ = ("_app", "_function")

    def __init__(self, function: HttpFunction, app: ASGIApp) -> None:
        self._function = function
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            response = await self._function(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await self._app(scope, receive, send)


class FunctionProtocol(OneWritePerTurnProtocol):
    """OneWritePerTurnProtocol handing each POST straight to `function`."""

    def __init__(self, *args: Any, function: HttpFunction, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = PostsToFunction(function, self.app)


def serve_function(function: HttpFunction) -> None:
    """Make the uvicorn worker functions-framework runs (its class is fixed there, so its
    configuration is the one hook) serve HTTP with FunctionProtocol for `function`. Must run in
    the gunicorn master before it spawns the workers: importing a function does."""
    protocol = partial(FunctionProtocol, function=function)
    # No WebSocket protocol (a function serves none, and requirements.txt installs no WebSocket
    # library, which uvicorn would look for at each worker's start) and no lifespan round (the
    # app has no lifespan handler): ~0.7 ms of a worker's start.
    uvicorn_worker.UvicornWorker.CONFIG_KWARGS.update(http=protocol, ws="none", lifespan="off")
