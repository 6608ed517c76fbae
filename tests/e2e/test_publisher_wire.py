"""The publisher on the wire, against the real TLS broker: what it writes and what arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

import pika
import pytest

from deploy.broker import BrokerNode
from shared.broker_params import connection_parameters
from shared.config import Settings
from shared.envelope import Message
from shared.publisher import Publisher
from tests.e2e.conftest import Route


def test_each_message_goes_out_in_one_write_and_arrives_whole(
    broker: BrokerNode,
    make_route: Callable[[str], Route],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in broker.client_env().items():
        monkeypatch.setenv(name, value)
    route = make_route("wire.test")
    publisher = Publisher(
        route.exchange,
        publish_timeout=5,
        parameters=partial(connection_parameters, Settings.from_env()),
    )
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


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split one send() into AMQP frames (type, payload); fails unless it holds whole frames."""
    frames = []
    while data:
        frame_type, size = data[0], int.from_bytes(data[3:7], "big")
        assert data[7 + size] == 0xCE, "a frame cut across writes"
        frames.append((frame_type, data[7 : 7 + size]))
        data = data[8 + size :]
    return frames
