"""shared.http_server: uvicorn's protocol serving each answer in one socket write."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
import uvicorn_worker
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.http_server import OneWritePerTurnProtocol, serve_answers_in_one_write

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


def recording(protocol: type[HttpToolsProtocol], writes: list[bytes]) -> type[HttpToolsProtocol]:
    class Recording(protocol):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(WriteRecorder(transport, writes))

    return Recording


@contextlib.asynccontextmanager
async def serving(protocol: type[HttpToolsProtocol]) -> AsyncIterator[int]:
    """uvicorn serving answer_202 with `protocol` on a free loopback port."""
    listening = socket.create_server(("127.0.0.1", 0))  # connections queue until uvicorn accepts
    config = uvicorn.Config(answer_202, http=protocol, lifespan="off", log_level="error")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        yield listening.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        listening.close()


def request(connection: str = "keep-alive") -> bytes:
    return (
        b"POST /vm_isolate HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\n"
        b"content-length: 2\r\nconnection: " + connection.encode() + b"\r\n\r\n{}"
    )


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await asyncio.wait_for(reader.readexactly(length), 5)


async def three_answers(protocol: type[HttpToolsProtocol]) -> list[bytes]:
    """Two keep-alive requests and a closing one on one connection; the writes that left."""
    writes: list[bytes] = []
    async with serving(recording(protocol, writes)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for connection in ("keep-alive", "keep-alive", "close"):
            writer.write(request(connection))
            head, body = await read_answer(reader)
            assert head.startswith(b"HTTP/1.1 202 Accepted\r\n")
            assert b"content-type: application/json\r\n" in head
            assert body == BODY
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after the third
        writer.close()
    return writes


def test_each_answer_leaves_in_one_write_in_order_and_a_close_sends_it_first() -> None:
    writes = asyncio.run(three_answers(OneWritePerTurnProtocol))
    assert len(writes) == 3
    for write in writes:
        assert write.startswith(b"HTTP/1.1 202 Accepted\r\n")
        assert write.endswith(b"\r\n\r\n" + BODY)


def test_uvicorns_own_protocol_writes_the_head_and_the_body_apart() -> None:
    """What the protocol is for, and proof that the test above can tell."""
    writes = asyncio.run(three_answers(HttpToolsProtocol))
    assert len(writes) == 6
    assert all(write == BODY for write in writes[1::2])


def test_once_installed_the_uvicorn_worker_serves_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(uvicorn_worker.UvicornWorker.CONFIG_KWARGS, "http", "auto")
    serve_answers_in_one_write()
    config = uvicorn.Config(answer_202, **uvicorn_worker.UvicornWorker.CONFIG_KWARGS)
    config.load()
    assert config.http_protocol_class is OneWritePerTurnProtocol
