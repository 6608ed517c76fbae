"""The publisher's bookkeeping without a broker: confirms, returns, alarms, back-off, ownership."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pika
import pytest

from shared.envelope import Message
from shared.errors import (
    BrokerBlockedError,
    BrokerUnavailableError,
    ConfigError,
    PublishRejectedError,
    PublishTimeoutError,
    UnroutableError,
)
from shared.publisher import Publisher, _Channel, _InFlight, _Link

MESSAGE = Message("vm.isolate", b"{}", pika.BasicProperties(message_id="m-1"))


def unusable_settings() -> list[pika.ConnectionParameters]:
    raise ConfigError("AMQP_URL is not set")


def frame(method: Any) -> SimpleNamespace:
    return SimpleNamespace(method=method)


class FakeChannel:
    """What the publisher uses of a pika channel; publishes are recorded, confirms sent by hand."""

    def __init__(self) -> None:
        self.is_open = True
        self.published: list[str] = []
        self.confirm: Any = None  # the publisher's ack/nack callback, once in confirm mode

    def close(self) -> None:
        self.is_open = False

    def add_on_close_callback(self, _callback: Any) -> None:
        pass

    def add_on_return_callback(self, _callback: Any) -> None:
        pass


class FakeConnection:
    """Opens FakeChannels, as pika's connection.channel() does, a moment later, and records
    what is published on each."""

    is_closing = is_closed = False

    def __init__(self) -> None:
        self.opened: list[FakeChannel] = []

    def basic_publish(self, channel: FakeChannel, *args: Any, **_kwargs: Any) -> None:
        channel.published.append(args[3].message_id)

    def channel(self, *, on_open_callback: Any) -> None:
        self.opened.append(FakeChannel())
        asyncio.get_running_loop().call_soon(on_open_callback, self.opened[-1])

    def confirm_delivery(self, channel: FakeChannel, *, on_confirm: Any, on_ready: Any) -> None:
        channel.confirm = on_confirm
        asyncio.get_running_loop().call_soon(on_ready, None)  # Confirm.SelectOk


async def link_with(publisher: Publisher, *message_ids: str) -> _Link:
    """A link whose channel's deliveries 1..n await confirms, as `_send` leaves them."""
    loop = asyncio.get_running_loop()
    connection = FakeConnection()
    connection.is_closed = True  # nothing for _drop to close
    channel = _Channel(FakeChannel())
    link = _Link(closed=loop.create_future(), connection=connection, channel=channel)
    link.channels.append(channel)
    for tag, message_id in enumerate(message_ids, start=1):
        channel.in_flight[tag] = _InFlight(message_id, loop.create_future())
    channel.next_tag = len(message_ids) + 1
    publisher._link = link
    return link


def current(link: _Link) -> _Channel:
    assert link.channel is not None
    return link.channel


def outcome(link_futures: list[asyncio.Future[None]]) -> list[str]:
    return [
        "pending"
        if not f.done()
        else ("ack" if f.exception() is None else type(f.exception()).__name__)
        for f in link_futures
    ]


def test_acks_nacks_and_returns_reach_exactly_their_own_deliveries() -> None:
    async def scenario() -> list[str]:
        publisher = Publisher("x", publish_timeout=1, parameters=unusable_settings)
        link = await link_with(publisher, "a", "b", "c", "d", "e")
        channel = current(link)
        futures = [d.confirmed for d in channel.in_flight.values()]
        returned = SimpleNamespace(
            routing_key="vm.isolate", exchange="x", reply_code=312, reply_text="NO_ROUTE"
        )
        # A basic.return comes before the ack that covers its message.
        publisher._on_return(channel, None, returned, SimpleNamespace(message_id="b"), b"")
        ack = pika.spec.Basic.Ack(delivery_tag=3, multiple=True)
        publisher._on_confirm(link, channel, frame(ack))
        nack = pika.spec.Basic.Nack(delivery_tag=5, multiple=False)
        publisher._on_confirm(link, channel, frame(nack))
        for future in futures:
            if future.done():
                future.exception()  # retrieved: no "never retrieved" warning
        return outcome(futures)

    assert asyncio.run(scenario()) == [
        "ack",
        UnroutableError.__name__,
        "ack",
        "pending",
        PublishRejectedError.__name__,
    ]


def test_a_nack_retires_the_channel_and_the_next_publish_goes_to_a_new_one() -> None:
    """A channel nacked once may be bound to a lost quorum queue leader, and then nacks every
    later publish: the next publishes take a new channel on the same connection, and the old
    one is closed once the confirms it still awaits are in."""

    async def scenario() -> None:
        publisher = Publisher("x", publish_timeout=1, parameters=unusable_settings)
        publisher._claim(asyncio.get_running_loop())
        link = await link_with(publisher, "a", "b")
        link.connection = FakeConnection()
        old = current(link)
        futures = [d.confirmed for d in old.in_flight.values()]

        publisher._on_confirm(link, old, frame(pika.spec.Basic.Nack(delivery_tag=1)))
        assert old.retired
        assert old.amqp.is_open  # "b" still awaits its confirm there
        publishing = asyncio.ensure_future(publisher.publish(MESSAGE))
        await asyncio.sleep(0.01)
        [new] = link.connection.opened
        assert new.published == ["m-1"]
        assert old.amqp.published == []

        publisher._on_confirm(link, old, frame(pika.spec.Basic.Ack(delivery_tag=2)))
        assert not old.amqp.is_open
        new.confirm(frame(pika.spec.Basic.Ack(delivery_tag=1)))
        await publishing
        assert publisher._link is link  # the same connection throughout
        assert outcome(futures) == [PublishRejectedError.__name__, "ack"]

    asyncio.run(scenario())


def test_requests_waiting_for_a_new_channel_share_it_or_the_next_if_it_is_nacked_meanwhile() -> (
    None
):
    async def scenario() -> None:
        publisher = Publisher("x", publish_timeout=1, parameters=unusable_settings)
        publisher._claim(asyncio.get_running_loop())
        link = await link_with(publisher, "a")
        link.connection = connection = FakeConnection()
        nacked = current(link).in_flight[1].confirmed
        publisher._on_confirm(link, current(link), frame(pika.spec.Basic.Nack(delivery_tag=1)))
        assert isinstance(nacked.exception(), PublishRejectedError)

        waiting = [asyncio.ensure_future(publisher._ready_channel(link)) for _ in range(3)]
        await asyncio.sleep(0)  # all three wait for one new channel
        assert link.renewing is not None
        # That channel is nacked in turn before the waiting requests resume.
        link.renewing.add_done_callback(lambda _: setattr(current(link), "retired", True))
        channels = await asyncio.gather(*waiting)

        assert len(connection.opened) == 2
        assert {channel.amqp for channel in channels} == {connection.opened[1]}

    asyncio.run(scenario())


def test_connection_blocked_answers_the_publishes_held_by_the_broker_at_once() -> None:
    async def scenario() -> list[str]:
        publisher = Publisher("x", publish_timeout=1, parameters=unusable_settings)
        link = await link_with(publisher, "a", "b")
        futures = [d.confirmed for d in current(link).in_flight.values()]
        publisher._set_blocked(link, True)
        loop = asyncio.get_running_loop()
        with pytest.raises(BrokerBlockedError):
            await publisher._send(loop, link, current(link), MESSAGE, until=time.monotonic() + 1)
        return outcome(futures)

    assert asyncio.run(scenario()) == [BrokerBlockedError.__name__] * 2


def test_an_unusable_broker_backs_off_and_the_refusal_names_the_cause() -> None:
    calls = []

    def settings() -> list[pika.ConnectionParameters]:
        calls.append(1)
        raise ConfigError("AMQP_URL is not set")

    async def scenario() -> list[BrokerUnavailableError]:
        publisher = Publisher("x", publish_timeout=1, parameters=settings)
        errors = []
        for _ in range(2):
            with pytest.raises(BrokerUnavailableError) as caught:
                await publisher.publish(MESSAGE)
            errors.append(caught.value)
        return errors

    _first, second = asyncio.run(scenario())
    assert len(calls) == 1  # the second request did not try again during the back-off
    assert "unusable" in second.detail
    assert second.retry_after >= 1


def test_one_publisher_never_serves_two_running_event_loops() -> None:
    publisher = Publisher("x", publish_timeout=1, parameters=unusable_settings)
    other = asyncio.new_event_loop()
    try:
        publisher._owner = (publisher._owner[0], other)  # as if `other` had published first
        with pytest.raises(RuntimeError, match="another running event loop"):
            asyncio.run(publisher.publish(MESSAGE))
    finally:
        other.close()
    # Once that loop is closed, a new one may take over (a test client, a new worker loop).
    with pytest.raises(BrokerUnavailableError):
        asyncio.run(publisher.publish(MESSAGE))


def test_a_slow_confirm_does_not_drop_a_link_that_confirms_others() -> None:
    """One message past its deadline while the broker acks others: a slow broker, not a dead
    link, so the connection and the other publishes in flight are kept."""

    async def scenario() -> tuple[bool, list[str]]:
        publisher = Publisher("x", publish_timeout=0.2, parameters=unusable_settings)
        publisher._claim(asyncio.get_running_loop())
        link = await link_with(publisher)
        slow = asyncio.ensure_future(publisher.publish(MESSAGE))
        await asyncio.sleep(0.05)
        other = _InFlight("other", asyncio.get_running_loop().create_future())
        current(link).in_flight[99] = other
        ack = pika.spec.Basic.Ack(delivery_tag=99, multiple=False)
        publisher._on_confirm(link, current(link), frame(ack))
        with pytest.raises(PublishTimeoutError):
            await slow
        return publisher._link is link, outcome([other.confirmed])

    assert asyncio.run(scenario()) == (True, ["ack"])


def test_no_confirm_at_all_within_the_deadline_drops_the_link() -> None:
    async def scenario() -> bool:
        publisher = Publisher("x", publish_timeout=0.1, parameters=unusable_settings)
        publisher._claim(asyncio.get_running_loop())
        await link_with(publisher)
        with pytest.raises(PublishTimeoutError):
            await publisher.publish(MESSAGE)
        return publisher._link is None

    assert asyncio.run(scenario())


def test_waiting_for_a_channel_and_for_the_confirm_share_one_publish_timeout() -> None:
    """A publish that first waits for a new channel (its old one retired) has only what is
    left of its timeout for the confirm."""

    class SlowConnection(FakeConnection):
        def channel(self, *, on_open_callback: Any) -> None:
            self.opened.append(FakeChannel())
            asyncio.get_running_loop().call_later(0.15, on_open_callback, self.opened[-1])

    async def scenario() -> float:
        publisher = Publisher("x", publish_timeout=0.25, parameters=unusable_settings)
        publisher._claim(asyncio.get_running_loop())
        link = await link_with(publisher)
        link.connection = SlowConnection()
        link.connection.is_closed = True  # nothing for _drop to close
        current(link).retired = True
        started = time.monotonic()
        with pytest.raises(PublishTimeoutError):
            await publisher.publish(MESSAGE)
        assert link.connection.opened[0].published == ["m-1"]  # on the new channel
        return time.monotonic() - started

    assert 0.24 <= asyncio.run(scenario()) < 0.35


def test_a_warm_up_opens_once_in_the_background_and_never_after_sigterm() -> None:
    attempts: list[int] = []

    def settings() -> list[pika.ConnectionParameters]:
        attempts.append(1)
        return unusable_settings()

    async def scenario() -> None:
        stopping = Publisher("x", publish_timeout=1, parameters=settings)
        await stopping.shut_down()
        stopping.warm_up()
        await asyncio.sleep(0.01)
        assert attempts == []

        publisher = Publisher("x", publish_timeout=1, parameters=settings)
        publisher.warm_up()
        publisher.warm_up()  # one opening at a time
        await asyncio.sleep(0.01)
        assert attempts == [1]
        # The failed opening backs off: the publish is refused with its cause, without a retry.
        with pytest.raises(BrokerUnavailableError, match="settings are unusable"):
            await publisher.publish(MESSAGE)
        assert attempts == [1]

    asyncio.run(scenario())
