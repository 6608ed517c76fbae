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
        for n in range(1, 4)
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
        await asyncio.gather(*(publisher.publish(m) for m in messages[1:]))
        transport.write = write
        await publisher.close()

    asyncio.run(scenario())

    # basic.publish, its content header and its body frame: one TLS record, one send().
    assert len(writes) == 2
    for data, message in zip(writes, messages[1:], strict=True):
        assert data.count(b"\xce") >= 3  # three frames, each ending with the frame-end octet
        assert data.endswith(message.body + b"\xce")
    delivered = route.messages()
    assert [d.properties.message_id for d in delivered] == ["m-1", "m-2", "m-3"]
    assert [d.body["n"] for d in delivered] == [1, 2, 3]
    assert all(d.properties.delivery_mode == 2 for d in delivered)
