"""Declare what the functions publish to, in the order the broker sees it: exchange, queue, bind.

Per exchange of the manifest (AMQP_EXCHANGE): the durable topic exchange, a dead-letter exchange
with its durable queue, and one durable queue per event type (quorum by default) bound by its
routing key and dead-lettering there. Declaring is idempotent: a second run finds everything and
changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import AMQPConnectionError, ChannelClosedByBroker

from deploy.manifest import Function
from shared.broker_params import connection_parameters
from shared.config import settings
from shared.vocabulary import RESOLVED, TEST

QueueType = Literal["quorum", "classic"]
Method = Literal["exchange.declare", "queue.declare", "queue.bind"]
NOT_FOUND = 404
PRECONDITION_FAILED = 406


class TopologyError(RuntimeError):
    """The broker cannot be reached, or refused a declaration."""


@dataclass(frozen=True)
class Step:
    """One AMQP method: exchange.declare, queue.declare or queue.bind."""

    method: Method
    name: str  # the exchange or queue
    exchange_type: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    exchange: str = ""  # bind: the source exchange
    routing_key: str = ""  # bind

    def __str__(self) -> str:
        if self.method == "queue.bind":
            return f"queue.bind {self.name} <- {self.exchange} ({self.routing_key or 'any key'})"
        kind = self.exchange_type or ", ".join(f"{k}={v}" for k, v in self.arguments.items())
        return f"{self.method} {self.name} (durable, {kind})"


def dead_letter_names(exchange: str) -> tuple[str, str]:
    """(dead-letter exchange, dead-letter queue) of an exchange."""
    return f"{exchange}.dead-letter", f"{exchange}.dead-letter"


def plan(functions: Iterable[Function], queue_type: QueueType = "quorum") -> list[Step]:
    """Every step, exchanges first, then queues, then bindings."""
    functions = list(functions)
    exchanges, queues, binds = [], [], []
    for exchange in dict.fromkeys(fn.exchange for fn in functions):
        dlx, dlq = dead_letter_names(exchange)
        exchanges += [
            Step("exchange.declare", exchange, "topic"),
            Step("exchange.declare", dlx, "fanout"),
        ]
        queues.append(Step("queue.declare", dlq, arguments={"x-queue-type": queue_type}))
        binds.append(Step("queue.bind", dlq, exchange=dlx))
    for fn in functions:
        dlx, _ = dead_letter_names(fn.exchange)
        arguments = {"x-queue-type": queue_type, "x-dead-letter-exchange": dlx}
        queues.append(Step("queue.declare", fn.queue, arguments=arguments))
        binds.append(Step("queue.bind", fn.queue, exchange=fn.exchange, routing_key=fn.routing_key))
        # Forwarded resolved alerts and test notifications: queues of their own, never read
        # as a new order.
        for suffix, forwarded in (
            (RESOLVED, fn.senders.forward_resolved),
            (TEST, fn.senders.forward_tests),
        ):
            if forwarded:
                queue, key = f"{fn.queue}.{suffix}", f"{fn.routing_key}.{suffix}"
                queues.append(Step("queue.declare", queue, arguments=arguments))
                binds.append(Step("queue.bind", queue, exchange=fn.exchange, routing_key=key))
    return exchanges + queues + binds


def connect() -> BlockingConnection:
    """A connection from the same AMQP_* settings (and secrets) the functions use; a bad
    setting is a ConfigError naming it."""
    parameters = connection_parameters(settings())
    try:
        return pika.BlockingConnection(parameters)
    except AMQPConnectionError as exc:
        raise TopologyError(f"cannot connect to the broker: {exc!r}") from exc


def apply(
    connection: BlockingConnection, steps: Iterable[Step], report: Callable[[str], None] = print
) -> None:
    """Run the steps, reporting for each whether it created something or found it."""
    for step in steps:
        if step.method == "queue.bind":
            _declare(connection.channel(), step)
            report(f"{step}: bound")
            continue
        existed = _exists(connection, step)
        _declare(connection.channel(), step)
        report(f"{step}: {'exists' if existed else 'created'}")


def _exists(connection: BlockingConnection, step: Step) -> bool:
    """A passive declare: the broker answers 404, and closes the channel, when it is missing."""
    channel = connection.channel()
    try:
        if step.method == "exchange.declare":
            channel.exchange_declare(step.name, passive=True)
        else:
            channel.queue_declare(step.name, passive=True)
    except ChannelClosedByBroker as exc:
        if exc.reply_code == NOT_FOUND:
            return False
        raise TopologyError(f"{step}: {exc.reply_text}") from exc
    channel.close()
    return True


def _declare(channel: BlockingChannel, step: Step) -> None:
    try:
        if step.method == "exchange.declare":
            channel.exchange_declare(step.name, step.exchange_type, durable=True)
        elif step.method == "queue.declare":
            channel.queue_declare(step.name, durable=True, arguments=step.arguments)
        else:
            channel.queue_bind(step.name, step.exchange, routing_key=step.routing_key)
    except ChannelClosedByBroker as exc:
        if exc.reply_code == PRECONDITION_FAILED:
            raise TopologyError(
                f"{step}: the broker refused ({exc.reply_text}). It exists with other "
                "settings (another type or queue type?): declare it as it is, or delete it "
                "first if its messages may go"
            ) from exc
        raise TopologyError(
            f"{step}: the broker refused ({exc.reply_code} {exc.reply_text})"
        ) from exc
    channel.close()
