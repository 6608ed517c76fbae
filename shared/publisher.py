"""Publish with publisher confirms over one pika AsyncioConnection per worker process.

Everything runs on the worker's event loop: each request publishes and awaits a future for its
own delivery tag, so many confirms are in flight at once with no threads and no locks.

The connection is opened lazily by the first publish (the module is imported in the gunicorn
master before it forks). A dropped connection is reopened by the next publish; a broker that
cannot be reached, or that closes our channel, gets an exponential back-off, during which
requests fail fast with 503. Failures are counted until a publish is confirmed again: a broker
that accepts connections but refuses every publish (a missing exchange) still backs off.

A nack answers its request with 503 and retires the channel: the next publishes go to a new
channel on the same connection, and the old one is closed once its confirms are in. RabbitMQ
(3.10) binds a channel to a quorum queue's leader of the moment: a channel whose first publish
to a queue comes while the queue's leader is down (the node that held both our connection and
the leader was lost) has every later publish nacked, even long after a new leader is elected.
A fresh channel publishes to the new leader.

On SIGTERM, `shut_down()` lets the publishes in flight finish; the last one closes the
connection cleanly before its response goes out (see `shared.shutdown`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pika
from pika.exceptions import AMQPError, ChannelClosedByBroker

from shared.amqp_connection import Connection
from shared.envelope import Message
from shared.errors import (
    BrokerBlockedError,
    BrokerUnavailableError,
    ConfigError,
    PublishRejectedError,
    PublishTimeoutError,
    SecretUnavailableError,
    UnavailableError,
    UnroutableError,
)
from shared.process import current_pid

log = logging.getLogger("event_relay.publisher")

BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 10.0
CLOSE_TIMEOUT_SECONDS = 2.0

T = TypeVar("T")


def _resolve(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _time_out(confirmed: asyncio.Future[None]) -> None:
    _fail(confirmed, TimeoutError())


@dataclass
class _InFlight:
    message_id: str
    confirmed: asyncio.Future[None]


@dataclass
class _Channel:
    """A confirm-mode channel with its deliveries awaiting a confirm (tags count per channel)."""

    amqp: Any
    in_flight: dict[int, _InFlight] = field(default_factory=dict)
    next_tag: int = 1
    retired: bool = False  # nacked: no new publishes; closed once its confirms are in


@dataclass
class _Link:
    """One connection, the channel publishes go to, and those retired but still awaiting
    confirms."""

    closed: asyncio.Future[None]
    connection: Any = None
    channel: _Channel | None = None
    channels: list[_Channel] = field(default_factory=list)  # every open one, current included
    renewing: asyncio.Future[_Channel] | None = None  # a new channel replacing a retired one
    blocked: bool = False
    last_confirm: float = 0.0  # monotonic time of the broker's last ack or nack


class Publisher:
    """Publishes messages to one exchange and answers only once the broker has confirmed them."""

    def __init__(
        self,
        exchange: str,
        *,
        publish_timeout: float,
        parameters: Callable[[], list[pika.ConnectionParameters]],
    ) -> None:
        self._exchange = exchange
        self._publish_timeout = publish_timeout
        self._parameters = parameters
        self._forget()

    def _forget(self) -> None:
        """Start from nothing: a new process (after fork) or a new event loop owns no connection."""
        self._owner: tuple[int, asyncio.AbstractEventLoop | None] = (current_pid(), None)
        self._link: _Link | None = None
        self._opening: asyncio.Future[_Link] | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_failure = "no connection yet"
        self._failure_kind: type[UnavailableError] = BrokerUnavailableError
        self._active = 0  # publishes in progress
        self._closing = False

    def _claim(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind the publisher to this process and event loop: pika objects never cross loops."""
        pid, owner = self._owner
        if pid == current_pid() and owner is loop:
            return
        if pid == current_pid() and owner is not None and not owner.is_closed():
            # Two live loops would share one connection and delivery-tag counter.
            raise RuntimeError("this Publisher already serves another running event loop")
        # After a fork the parent's connection is not ours to touch; a closed loop's is dead.
        self._forget()
        self._owner = (current_pid(), loop)

    @property
    def exchange(self) -> str:
        return self._exchange

    async def publish(self, message: Message, *, deadline: float | None = None) -> None:
        """Return once the broker confirmed `message`, within the publish timeout (or by the
        earlier monotonic `deadline`); raise an UnavailableError otherwise."""
        loop = asyncio.get_running_loop()
        self._claim(loop)
        self._active += 1
        started = time.monotonic()
        limit = self._publish_timeout
        if deadline is not None:
            limit = min(limit, deadline - started)
        link = self._link
        try:
            channel = link.channel if link is not None else None
            if link is None or channel is None or channel.retired:  # wait, within the limit
                async with asyncio.timeout(limit):
                    link = await self._ready_link()
                    channel = await self._ready_channel(link)
            await self._send(loop, link, channel, message, until=started + limit)
        except TimeoutError:
            # No confirm in time. If the broker confirmed nothing at all since, the connection
            # may be half-open: the next request opens a new one. A broker that is merely slow
            # for this message, or blocked by an alarm, keeps its connection and the others.
            if link is not None and not link.blocked and link.last_confirm < started:
                self._drop(link, "no confirm within the publish timeout")
            raise PublishTimeoutError(f"no confirm from the broker within {limit:g} s") from None
        finally:
            self._active -= 1
            if self._closing and self._active == 0:
                # The last publish in flight at shutdown closes the connection before its
                # response goes out: uvicorn waits for responses, then the worker dies at once.
                await self._close_quietly()

    def warm_up(self) -> None:
        """Start opening the connection, if none is open or opening, without waiting for it.

        Called as a request arrives: the opening proceeds whenever the request yields to the
        loop (while a large body arrives, at the latest when it publishes), and a request that
        is refused still leaves the connection opening for the next. A failure is left for the
        publishes; after SIGTERM nothing is opened that the shutdown would not close.
        """
        if self._link is None and self._opening is None and not self._closing:
            self._claim(asyncio.get_running_loop())
            if self._link is None and self._opening is None and time.monotonic() >= self._retry_at:
                self._start_opening()

    async def shut_down(self) -> None:
        """SIGTERM: close the connection now if no publish is in flight, else after the last."""
        self._closing = True
        if self._active == 0:
            await self._close_quietly()

    async def close(self) -> None:
        """Close the connection cleanly; deliveries still awaiting a confirm get 503."""
        if self._opening is not None:  # a connection being opened would outlive the close
            with contextlib.suppress(UnavailableError):
                await asyncio.shield(self._opening)
        link, self._link = self._link, None
        if link is None:
            return
        self._fail_in_flight(link, lambda: BrokerUnavailableError("the publisher is shutting down"))
        if not (link.connection.is_closing or link.connection.is_closed):
            link.connection.close()
        await asyncio.wait_for(asyncio.shield(link.closed), CLOSE_TIMEOUT_SECONDS)
        log.info("closed the broker connection")

    async def _close_quietly(self) -> None:
        try:
            await self.close()
        except Exception:
            log.warning("the broker connection did not close cleanly", exc_info=True)

    # --- sending ------------------------------------------------------------------------

    async def _send(
        self,
        loop: asyncio.AbstractEventLoop,
        link: _Link,
        channel: _Channel,
        message: Message,
        *,
        until: float,
    ) -> None:
        """Publish on `channel` and await the confirm until the monotonic time `until`, under
        one timer of the loop's: an asyncio.timeout costs every publish a good deal more."""
        if link.blocked:
            raise BrokerBlockedError("the broker blocks publishers (memory or disk alarm)")
        tag, channel.next_tag = channel.next_tag, channel.next_tag + 1
        confirmed = loop.create_future()
        channel.in_flight[tag] = _InFlight(message.id, confirmed)
        timer = loop.call_later(until - time.monotonic(), _time_out, confirmed)
        try:
            link.connection.basic_publish(
                channel.amqp,
                self._exchange,
                message.routing_key,
                message.body,
                message.properties,
                mandatory=True,
            )
            await confirmed
        except AMQPError as exc:
            self._drop(link, f"publish failed: {exc!r}")
            raise BrokerUnavailableError("the broker connection failed while publishing") from exc
        finally:
            timer.cancel()
            channel.in_flight.pop(tag, None)
            self._close_if_drained(channel)

    def _on_confirm(self, link: _Link, channel: _Channel, frame: Any) -> None:
        method = frame.method
        in_flight = channel.in_flight
        if method.multiple:
            tags = [tag for tag in in_flight if tag <= method.delivery_tag]
        else:
            tags = [method.delivery_tag] if method.delivery_tag in in_flight else []
        acked = isinstance(method, pika.spec.Basic.Ack)
        link.last_confirm = time.monotonic()
        if acked:
            self._failures = 0  # the broker works end to end again
        elif not channel.retired:
            # The channel may be bound to a quorum queue leader that is gone (see the module's
            # doc): the next publishes take a new one.
            channel.retired = True
        for tag in tags:
            delivery = in_flight.pop(tag)
            if delivery.confirmed.done():  # already returned as unroutable, or timed out
                continue
            if acked:
                delivery.confirmed.set_result(None)
            else:
                log.warning(
                    "broker nacked a message; the next publishes take a new channel",
                    extra={"event_id": delivery.message_id},
                )
                delivery.confirmed.set_exception(
                    PublishRejectedError(
                        "the broker refused the message (nack); a queue may be full, "
                        "or its leader was lost"
                    )
                )
        self._close_if_drained(channel)

    @staticmethod
    def _close_if_drained(channel: _Channel) -> None:
        """A retired channel is closed once no delivery on it awaits a confirm."""
        if channel.retired and not channel.in_flight and channel.amqp.is_open:
            with contextlib.suppress(AMQPError):  # the connection is closing: it goes with it
                channel.amqp.close()

    def _on_return(
        self, channel: _Channel, _amqp: Any, method: Any, properties: Any, _body: bytes
    ) -> None:
        """A returned message arrives before its ack: fail the oldest matching delivery now."""
        for _tag, in_flight in sorted(channel.in_flight.items()):
            if in_flight.message_id == properties.message_id and not in_flight.confirmed.done():
                log.error(
                    "broker returned an unroutable message",
                    extra={
                        "event_id": in_flight.message_id,
                        "routing_key": method.routing_key,
                        "exchange": method.exchange,
                        "reply": f"{method.reply_code} {method.reply_text}",
                    },
                )
                in_flight.confirmed.set_exception(
                    UnroutableError(f"no queue is bound for routing key {method.routing_key!r}")
                )
                return

    def _back_off(self, cause: str, kind: type[UnavailableError] = BrokerUnavailableError) -> float:
        """Hold off the next connection attempt, doubling the wait with each failure; the
        requests meanwhile get a `kind` error (e.g. secret-unavailable) saying why."""
        delay = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2**self._failures)
        self._failures += 1
        self._retry_at = time.monotonic() + delay * random.uniform(0.8, 1.0)  # noqa: S311
        self._last_failure = cause
        self._failure_kind = kind
        return float(delay)

    # --- the connection -------------------------------------------------------------------

    async def _ready_link(self) -> _Link:
        if self._link is not None:
            return self._link
        if self._opening is None:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                raise self._failure_kind(
                    f"the broker is unavailable ({self._last_failure}); retrying shortly",
                    retry_after=math.ceil(wait),
                )
            self._start_opening()
        assert self._opening is not None
        # Shielded: a request giving up must not cancel the connection the others wait for.
        return await asyncio.shield(self._opening)

    def _start_opening(self) -> None:
        self._opening = asyncio.ensure_future(self._open())
        # Retrieved here too: after a warm-up no publish may come to await a failed opening.
        self._opening.add_done_callback(lambda opening: opening.cancelled() or opening.exception())

    async def _open(self) -> _Link:
        try:
            try:
                # In a thread: it reads secrets (a file, Secret Manager) and may build the TLS
                # context, neither of which may stall the requests on the event loop.
                parameters = await asyncio.to_thread(self._parameters)
            except SecretUnavailableError as exc:  # answered as such, without a retry storm
                self._back_off(f"a broker secret cannot be read: {exc}", SecretUnavailableError)
                raise
            except ConfigError as exc:
                log.error("the broker settings are unusable: %s", exc)
                self._back_off("the broker settings are unusable")
                raise BrokerUnavailableError(f"the broker settings are unusable: {exc}") from exc
            errors = []
            for params in parameters:  # failover: the first broker that answers wins
                try:
                    link = await self._connect(params)
                # pika reports a failed handshake with several families of errors (its
                # connection workflow's own are not AMQPErrors): each means "not this broker".
                except Exception as exc:
                    errors.append(f"{params.host}:{params.port}: {exc!r}")
                    continue
                if link.closed.done():  # closed between its confirm.select-ok and now
                    errors.append(f"{params.host}:{params.port}: closed while opening")
                    continue
                # Which node this worker publishes through: the local run and operators follow it.
                broker = f"{params.host}:{params.port}"
                if errors:
                    log.warning(
                        "connected to a fallback broker", extra={"broker": broker, "errors": errors}
                    )
                else:
                    log.info("connected to the broker", extra={"broker": broker})
                self._link, self._retry_at = link, 0.0
                return link
            delay = self._back_off("cannot connect")
            log.error("cannot connect to the broker", extra={"errors": errors, "retry_in_s": delay})
            raise BrokerUnavailableError(
                "cannot connect to the broker", retry_after=math.ceil(delay)
            )
        finally:
            self._opening = None

    async def _ready_channel(self, link: _Link) -> _Channel:
        """The link's channel; once a nack retired it, a new one, opened once for all waiting.

        Returned with no pause since it was checked: publish on it at once. A new channel can
        be nacked (and closed) before a request that waited for it resumes: then the next.
        """
        while link.channel is None or link.channel.retired:
            if link.renewing is None:
                link.renewing = asyncio.ensure_future(self._renew_channel(link))
                link.renewing.add_done_callback(lambda done: done.cancelled() or done.exception())
            # Shielded: a request giving up must not cancel the channel the others wait for.
            await asyncio.shield(link.renewing)
        return link.channel

    async def _renew_channel(self, link: _Link) -> _Channel:
        try:
            async with asyncio.timeout(self._publish_timeout):
                return await self._new_channel(link)
        except (AMQPError, BrokerUnavailableError, TimeoutError) as exc:
            self._drop(link, f"no new channel: {exc!r}")
            raise BrokerUnavailableError("the broker opened no new channel") from exc
        finally:
            link.renewing = None

    async def _new_channel(self, link: _Link) -> _Channel:
        """Open a confirm-mode channel on the link's connection; it becomes the current one."""
        opening = asyncio.ensure_future(self._open_channel(link))
        # A connection closing meanwhile never opens the channel: do not wait for it then.
        either: set[asyncio.Future[Any]] = {opening, link.closed}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not opening.done():
            opening.cancel()
            raise BrokerUnavailableError("the broker connection closed")
        return opening.result()

    async def _open_channel(self, link: _Link) -> _Channel:
        ready: asyncio.Future[_Channel] = asyncio.get_running_loop().create_future()

        def on_channel(amqp: Any) -> None:
            channel = _Channel(amqp)
            amqp.add_on_close_callback(
                lambda _amqp, reason: self._on_channel_closed(link, channel, reason)
            )
            amqp.add_on_return_callback(lambda *args: self._on_return(channel, *args))
            link.connection.confirm_delivery(
                amqp,
                on_confirm=lambda frame: self._on_confirm(link, channel, frame),
                on_ready=lambda _frame: _resolve(ready, channel),
            )

        link.connection.channel(on_open_callback=on_channel)
        channel = await ready
        link.channel = channel
        link.channels.append(channel)
        return channel

    async def _connect(self, params: pika.ConnectionParameters) -> _Link:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        link = _Link(closed=loop.create_future())

        def on_open_error(_connection: Any, error: BaseException | str) -> None:
            _resolve(link.closed, None)
            _fail(ready, error if isinstance(error, BaseException) else AMQPError(error))

        def on_close(_connection: Any, reason: BaseException) -> None:
            _resolve(link.closed, None)
            _fail(ready, reason)
            self._drop(link, f"connection closed: {reason!r}")

        link.connection = Connection(
            params,
            loop=loop,
            on_open_callback=lambda _connection: _resolve(ready, None),
            on_open_error_callback=on_open_error,
            on_close_callback=on_close,
        )
        link.connection.add_on_connection_blocked_callback(lambda *_: self._set_blocked(link, True))
        link.connection.add_on_connection_unblocked_callback(
            lambda *_: self._set_blocked(link, False)
        )
        try:
            # pika's own stack timeout bounds the handshakes; this bounds the channel set-up too.
            async with asyncio.timeout(params.stack_timeout + 1):
                await ready
                await self._new_channel(link)
            return link
        except BaseException:
            if not (link.connection.is_closing or link.connection.is_closed):
                link.connection.close()
            raise

    def _on_channel_closed(self, link: _Link, channel: _Channel, reason: BaseException) -> None:
        """The broker closes a channel on errors such as a missing exchange (404): back off."""
        if channel in link.channels:
            link.channels.remove(channel)
        self._fail_channel(
            channel, lambda: BrokerUnavailableError(f"no confirm from the broker: {reason!r}")
        )
        if channel.retired or channel is not link.channel:
            return  # retired after a nack and closed once drained: the link has another
        if isinstance(reason, ChannelClosedByBroker):
            self._back_off(f"the broker closed the channel: {reason}")
            log.error("the broker closed the channel", extra={"reason": str(reason)})
        self._drop(link, f"channel closed: {reason}")

    def _set_blocked(self, link: _Link, blocked: bool) -> None:
        link.blocked = blocked
        log.warning("broker %s publishers", "blocks" if blocked else "unblocked")
        if blocked:
            # RabbitMQ sends connection.blocked only once a publish arrives during an alarm,
            # and holds that publish: answer it now rather than at the timeout.
            self._fail_in_flight(
                link,
                lambda: BrokerBlockedError(
                    "the broker blocks publishers (memory or disk alarm); "
                    "the message may still be delivered once the alarm clears"
                ),
            )

    def _drop(self, link: _Link, reason: str) -> None:
        """Forget a broken link and fail what still waits on it; the next publish reconnects."""
        if self._link is link:
            self._link = None
            log.warning("dropping the broker connection: %s", reason)
        self._fail_in_flight(
            link, lambda: BrokerUnavailableError(f"no confirm from the broker: {reason}")
        )
        if not (link.connection.is_closing or link.connection.is_closed):
            link.connection.close()

    @classmethod
    def _fail_in_flight(cls, link: _Link, error: Callable[[], UnavailableError]) -> None:
        for channel in link.channels:
            cls._fail_channel(channel, error)

    @staticmethod
    def _fail_channel(channel: _Channel, error: Callable[[], UnavailableError]) -> None:
        for delivery in channel.in_flight.values():
            _fail(delivery.confirmed, error())
        channel.in_flight.clear()
