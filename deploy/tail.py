"""Print the events on the broker as an orchestrator receives them, one block per message.

Two ways to look: `consume` takes the messages off the event queues (what the local run does:
the node is private), and the default taps the exchange with a private auto-delete queue bound
to every routing key, so a shared broker's consumers still get every message.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable
from typing import TextIO

from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import AMQPConnectionError, AMQPError
from pika.spec import Basic, BasicProperties

from deploy.manifest import Function
from deploy.topology import TopologyError


def tail(
    connection: BlockingConnection,
    functions: Iterable[Function],
    *,
    consume: bool,
    out: TextIO,
    until: Callable[[], bool] = lambda: False,
) -> None:
    """Print each message as it arrives, until `until()` holds (or Ctrl-C)."""
    channel = connection.channel()

    def show(
        _ch: BlockingChannel, method: Basic.Deliver, props: BasicProperties, body: bytes, queue: str
    ) -> None:
        out.write(format_message(queue, method.routing_key, props, body))
        out.flush()

    for fn in functions:
        queue = fn.queue
        if not consume:
            queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            channel.queue_bind(queue, fn.exchange, routing_key=fn.routing_key)
        channel.basic_consume(
            queue,
            lambda ch, m, p, b, shown=(fn.queue if consume else fn.exchange): show(
                ch, m, p, b, shown
            ),
            auto_ack=True,
        )
    while not until():
        connection.process_data_events(time_limit=0.25)


def tail_until_stopped(
    connect: Callable[[], BlockingConnection],
    functions: Iterable[Function],
    *,
    say: Callable[[str], None],
    out: TextIO,
) -> None:
    """Consume and print until Ctrl-C, riding out broker outages (the local run stops and starts
    its broker to show the spool): reconnect each second until it is back."""
    while True:
        try:
            connection = connect()
        except TopologyError:
            time.sleep(1)
            continue
        try:
            tail(connection, functions, consume=True, out=out)
        except AMQPConnectionError:
            say("the broker went away: the tail waits for it")
        finally:
            with contextlib.suppress(AMQPError):
                if connection.is_open:
                    connection.close()


def format_message(where: str, routing_key: str, props: BasicProperties, body: bytes) -> str:
    """A header line (time, queue, routing key, id) and the event's data as indented JSON."""
    stamp = time.strftime("%H:%M:%S", time.localtime(props.timestamp or time.time()))
    try:
        envelope = json.loads(body)
        data = json.dumps(envelope.get("data", envelope), indent=2, ensure_ascii=False)
    except (ValueError, AttributeError):
        data = body.decode(errors="replace")
    header = f"[{stamp}] {where} <- {routing_key}  id={props.message_id}  type={props.type}"
    return header + "\n" + "\n".join(f"    {line}" for line in data.splitlines()) + "\n"
