"""Deliver a request's messages durably: the broker's confirm, else the spool's acknowledgement.

Without a spool this is the publisher alone. With one, a message the broker could not confirm
(unreachable, back-off running, blocked, timed out, nacked, unroutable, a broker secret
unreadable) goes to Pub/Sub instead, within what is left of the request's budget. While the
broker is known to be down the publisher fails at once, so the spool is reached at once too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from shared.envelope import Message
from shared.errors import SpoolUnavailableError, UnavailableError
from shared.publisher import Publisher
from shared.spool import Spool

Delivered = Literal["confirmed", "spooled"]
SPOOL_MIN_SECONDS = 1.0  # what a broker attempt must leave the spool of the request's budget


@dataclass(frozen=True)
class Outcome:
    """How one message is held: confirmed by the broker, or spooled (and why)."""

    delivered: Delivered
    broker_problem: str | None = None  # the broker's problem slug when it was spooled


CONFIRMED = Outcome("confirmed")


class Deliverer:
    """The broker first; the spool, when there is one, for what the broker did not confirm."""

    def __init__(
        self, publisher: Publisher, spool: Spool | None = None, *, budget: float = 0
    ) -> None:
        self.publisher = publisher
        self._spool = spool
        self._budget = budget  # seconds a request may take, the spool included

    async def deliver(self, messages: Sequence[Message], started: float) -> list[Outcome]:
        """Every message held, or the first failure raised (a 503: the caller retries)."""
        deadline = started + self._budget
        if len(messages) == 1:  # the canonical path: no gather, no extra task
            return [await self._deliver(messages[0], deadline)]
        results = await asyncio.gather(
            *(self._deliver(m, deadline) for m in messages), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, Outcome)]

    async def _deliver(self, message: Message, deadline: float) -> Outcome:
        if self._spool is None:
            await self.publisher.publish(message)
            return CONFIRMED
        try:
            await self.publisher.publish(message, deadline=deadline - SPOOL_MIN_SECONDS)
            return CONFIRMED
        except UnavailableError as broker_error:
            try:
                await self._spool.publish(
                    message, exchange=self.publisher.exchange, deadline=deadline
                )
            except SpoolUnavailableError as spool_error:
                raise type(broker_error)(
                    f"{broker_error.detail}; the spool failed too: {spool_error.detail}",
                    retry_after=broker_error.retry_after,
                ) from spool_error
            return Outcome("spooled", broker_error.slug)
