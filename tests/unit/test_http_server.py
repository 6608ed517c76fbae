"""shared.http_server: uvicorn's protocol handing POSTs straight to the function and serving each
answer in one socket write."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
import uvicorn
import uvicorn_worker
from starlette.requests import Request
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.http_server import FunctionProtocol, OneWritePerTurnProtocol, serve_function

BODY = b'{"delivery":"confirmed"}'


async def answer_202(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app answering as Starlette's Response does: the head, then the body."""
    assert scope["type"] == "http"
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    await send({"type": "http.response.start", "status": 202, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


class WriteRecorder:
    """The loop's real transport, recording each write that reaches it."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def recording(protocol: Any, writes: list[bytes]) -> Any:
    """`protocol` (a class, or a partial of one), its transport recording each write."""
    keywords = protocol.keywords if isinstance(protocol, partial) else {}
    base = protocol.func if isinstance(protocol, partial) else protocol

    class Recording(base):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(WriteRecorder(transport, writes))

    return partial(Recording, **keywords)


@contextlib.asynccontextmanager
async def serving(protocol: Any, app: Any = answer_202) -> AsyncIterator[int]:
    """uvicorn serving `app` with `protocol` on a free loopback port."""
    listening = socket.create_server(("127.0.0.1", 0))  # connections queue until uvicorn accepts
    config = uvicorn.Config(app, http=protocol, lifespan="off", log_level="error")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        yield listening.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        listening.close()


def request(connection: str = "keep-alive", method: str = "POST") -> bytes:
    return method.encode() + (
        b" /vm_isolate HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\n"
        b"content-length: 2\r\nconnection: " + connection.encode() + b"\r\n\r\n{}"
    )


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await asyncio.wait_for(reader.readexactly(length), 5)


async def three_answers(protocol: Any, expected: bytes = BODY) -> list[bytes]:
    """Two keep-alive requests and a closing one on one connection, each answered `expected`;
    the writes that left."""
    writes: list[bytes] = []
    async with serving(recording(protocol, writes)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for connection in ("keep-alive", "keep-alive", "close"):
            writer.write(request(connection))
            head, body = await read_answer(reader)
            assert head.startswith(b"HTTP/1.1 202 Accepted\r\n")
            assert body == expected
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after the third
        writer.close()
    return writes


def test_each_answer_leaves_in_one_write_in_order_and_a_close_sends_it_first() -> None:
    writes = asyncio.run(three_answers(OneWritePerTurnProtocol))
    assert len(writes) == 3
    for write in writes:
        assert write.startswith(b"HTTP/1.1 202 Accepted\r\n")
        assert b"content-type: application/json\r\n" in write
        assert write.endswith(b"\r\n\r\n" + BODY)


def test_uvicorns_own_protocol_writes_the_head_and_the_body_apart() -> None:
    """What the protocol is for, and proof that the test above can tell."""
    writes = asyncio.run(three_answers(HttpToolsProtocol))
    assert len(writes) == 6
    assert all(write == BODY for write in writes[1::2])


async def the_function(request: Request) -> Response:
    """A function as ours are: it takes every POST, and reads the body itself."""
    assert request.method == "POST"
    return Response(b"function " + await request.body(), 202)


async def answers_by_method() -> dict[str, tuple[bytes, bytes]]:
    """A POST and a GET on one connection to FunctionProtocol(the_function) in front of
    answer_202, which stands for functions-framework's app."""
    protocol = partial(FunctionProtocol, function=the_function)
    answers = {}
    async with serving(protocol, app=answer_202) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for method in ("POST", "GET"):
            writer.write(request(method=method))
            answers[method] = await read_answer(reader)
        writer.close()
    return answers


def test_a_post_goes_straight_to_the_function_anything_else_to_the_app() -> None:
    answers = asyncio.run(answers_by_method())
    head, body = answers["POST"]
    assert head.startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert body == b"function {}"  # the function's answer, with the body the request sent
    head, body = answers["GET"]
    assert head.startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert body == BODY  # the app's


def test_function_protocol_writes_each_answer_at_once() -> None:
    protocol = partial(FunctionProtocol, function=the_function)
    writes = asyncio.run(three_answers(protocol, expected=b"function {}"))
    assert len(writes) == 3
    assert all(write.endswith(b"\r\n\r\nfunction {}") for write in writes)


def test_once_installed_the_uvicorn_worker_serves_the_function_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(uvicorn_worker.UvicornWorker.CONFIG_KWARGS, "http", "auto")
    serve_function(the_function)
    config = uvicorn.Config(answer_202, **uvicorn_worker.UvicornWorker.CONFIG_KWARGS)
    config.load()
    protocol = config.http_protocol_class
    assert isinstance(protocol, partial)
    assert protocol.func is FunctionProtocol
    assert protocol.keywords == {"function": the_function}
