"""The publisher on the wire, against the real TLS broker: what it writes and what arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import pika
import pytest
import uvloop

from deploy.broker import BrokerNode
from shared.broker_params import connection_parameters
from shared.config import Settings
from shared.envelope import Message
from shared.publisher import Publisher
from tests.e2e.conftest import Route
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.usefixtures("broker_settings")


def _publisher(exchange: str) -> Publisher:
    return Publisher(
        exchange, publish_timeout=5, parameters=partial(connection_parameters, Settings.from_env())
    )


def test_each_message_goes_out_in_one_write_and_arrives_whole(
    make_route: Callable[[str], Route],
) -> None:
    route = make_route("wire.test")
    publisher = _publisher(route.exchange)
    messages = [
        Message(
            "wire.test",
            b'{"n":%d,"pad":"%s"}' % (n, b"x" * 300 * n),
            pika.BasicProperties(message_id=f"m-{n}", delivery_mode=2, app_id="wire"),
        )
        for n in range(1, 5)
    ]
    writes: list[bytes] = []

    async def scenario() -> None:
        await publisher.publish(messages[0])  # opens the connection
        transport = publisher._link.connection._transport  # type: ignore[union-attr]
        write = transport.write

        def recording_write(data: bytes) -> None:
            writes.append(data)
            write(data)

        transport.write = recording_write
        await publisher.publish(messages[1])  # alone in its loop turn
        await asyncio.gather(*(publisher.publish(m) for m in messages[2:]))  # together
        transport.write = write
        await publisher.close()

    asyncio.run(scenario())

    # basic.publish, its content header and its body frame always go out in the same send();
    # a lone message is one send(), and concurrent ones never take more sends than messages.
    sent = [_frames(data) for data in writes]
    assert [frame_type for frame_type, _ in sent[0]] == [1, 2, 3]
    assert sent[0][2][1] == messages[1].body
    assert 2 <= len(sent) <= 3
    together = [frame for frames in sent[1:] for frame in frames]
    assert [frame_type for frame_type, _ in together] == [1, 2, 3, 1, 2, 3]
    for frames in sent[1:]:
        assert len(frames) % 3 == 0  # whole messages only
    assert {together[2][1], together[5][1]} == {messages[2].body, messages[3].body}
    delivered = route.messages()
    assert sorted(d.properties.message_id for d in delivered) == ["m-1", "m-2", "m-3", "m-4"]
    assert sorted(d.body["n"] for d in delivered) == [1, 2, 3, 4]
    assert all(d.properties.delivery_mode == 2 for d in delivered)


def test_a_message_larger_than_a_frame_arrives_whole(make_route: Callable[[str], Route]) -> None:
    """The broker's frame_max (128 KiB) splits the body into several body frames."""
    route = make_route("wire.large")
    publisher = _publisher(route.exchange)
    pad = "".join(chr(ord("a") + n % 26) for n in range(300_000))  # no two frames alike
    message = Message(
        "wire.large",
        b'{"n":1,"pad":"%s"}' % pad.encode(),
        pika.BasicProperties(message_id="m-large", delivery_mode=2),
    )

    async def scenario() -> None:
        await publisher.publish(message)
        await publisher.close()

    asyncio.run(scenario())
    [delivered] = route.messages()
    assert delivered.properties.message_id == "m-large"
    assert delivered.body == {"n": 1, "pad": pad}


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split one send() into AMQP frames (type, payload); fails unless it holds whole frames."""
    frames = []
    while data:
        frame_type, size = data[0], int.from_bytes(data[3:7], "big")
        assert data[7 + size] == 0xCE, "a frame cut across writes"
        frames.append((frame_type, data[7 : 7 + size]))
        data = data[8 + size :]
    return frames


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_a_cut_stream_is_a_lost_connection_and_the_next_publish_reconnects(
    run: Callable[[Coroutine[Any, Any, None]], None],
    broker: BrokerNode,
    make_route: Callable[[str], Route],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The TCP stream ends without a TLS close_notify (a dropped VPN, a killed node): pika hears
    of a lost stream, not of an abort of its own, and nothing escapes to the event loop."""
    route = make_route("wire.cut")
    loop_errors: list[dict[str, Any]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, err: loop_errors.append(err))
        with TcpProxy(broker.port) as proxy:
            monkeypatch.setenv("AMQP_URL", broker.url(port=proxy.port))
            publisher = _publisher(route.exchange)
            await publisher.publish(_message("wire.cut", "before"))
            first = publisher._link
            proxy.cut()
            while publisher._link is first:  # noqa: ASYNC110 (hears of the loss by itself)
                await asyncio.sleep(0.01)
            await publisher.publish(_message("wire.cut", "after"))
            await publisher.close()

    run(asyncio.wait_for(scenario(), 20))  # functions-framework serves on uvloop

    assert loop_errors == []
    assert sorted(d.properties.message_id for d in route.messages()) == ["after", "before"]


def _message(routing_key: str, message_id: str) -> Message:
    return Message(routing_key, b"{}", pika.BasicProperties(message_id=message_id, delivery_mode=2))
