"""What the fault tests share: POSTs whose ids are known even when refused, concurrent load, a
durable route, and the check that the delivery promise held.

The promise: each 202 is on the queue exactly once, every other answer is a 503 with
Retry-After, and nothing waits past the publish timeout.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pika
from pika.adapters.blocking_connection import BlockingChannel

from deploy.broker import BrokerNode
from tests.conftest import broker_connection_params
from tests.e2e.conftest import EVENT

ROUTING_KEY = "vm.isolate"
PUBLISH_TIMEOUT = 3.0  # AMQP_PUBLISH_TIMEOUT of the functions in the fault tests
MARGIN = 1.5  # HTTP, scheduling and a loaded 2-core machine on top of the timeout
FAULT_ENV = {"AMQP_PUBLISH_TIMEOUT": f"{PUBLISH_TIMEOUT:g}", "AMQP_CONNECT_TIMEOUT": "1"}


@contextlib.contextmanager
def channel_on(node: BrokerNode) -> Iterator[BlockingChannel]:
    """A channel on a fresh connection: connections do not survive a restart."""
    connection = pika.BlockingConnection(broker_connection_params(node))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


class DurableRoute:
    """A durable topic exchange with a durable queue bound to ROUTING_KEY, declared on `node`
    (a quorum queue's leader is then that node)."""

    def __init__(
        self,
        node: BrokerNode,
        *,
        exchange: str | None = None,
        binding: str = ROUTING_KEY,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self.node = node
        self.exchange = exchange or f"faults-{uuid.uuid4().hex[:12]}"
        self.queue = f"{self.exchange}.q"
        with channel_on(node) as channel:
            channel.exchange_declare(self.exchange, "topic", durable=True)
            channel.queue_declare(self.queue, durable=True, arguments=arguments)
            channel.queue_bind(self.queue, self.exchange, binding)

    def message_ids(self, via: BrokerNode | None = None) -> list[str]:
        """Take every message off the queue (through `via`, else the declaring node); their
        message_ids, duplicates kept."""
        ids: list[str] = []
        with channel_on(via or self.node) as channel:
            channel.basic_qos(prefetch_count=500)  # thousands after a load test: not one by one
            while True:
                for method, properties, _body in channel.consume(
                    self.queue, inactivity_timeout=0.5
                ):
                    if method is None:  # nothing came for a while
                        break
                    assert properties.delivery_mode == 2  # persistent: survives a restart
                    ids.append(properties.message_id)
                    channel.basic_ack(method.delivery_tag)
                channel.cancel()  # requeues any delivered since: counted next round
                if channel.queue_declare(self.queue, passive=True).method.message_count == 0:
                    return ids

    def delete(self, via: BrokerNode | None = None) -> None:
        with channel_on(via or self.node) as channel:
            channel.queue_delete(self.queue)
            channel.exchange_delete(self.exchange)


@dataclass
class Outcome:
    key: str
    status: int  # 0: no answer at all
    retry_after: str | None
    problem: str | None
    started: float
    seconds: float
    delivery: str | None = None  # a 202's: "confirmed", or "spooled" with the spool on

    @property
    def ended(self) -> float:
        return self.started + self.seconds


def post(client: httpx.Client | None, url: str) -> Outcome:
    """POST the event with an Idempotency-Key of its own, so even a 503's id is known."""
    key = uuid.uuid4().hex
    started = time.monotonic()
    try:
        response = (client or httpx).post(
            url, json=EVENT, headers={"idempotency-key": key}, timeout=PUBLISH_TIMEOUT + 30
        )
    except httpx.HTTPError:
        return Outcome(key, 0, None, None, started, time.monotonic() - started)
    answer = response.json()
    accepted = response.status_code == 202
    return Outcome(
        key,
        response.status_code,
        response.headers.get("retry-after"),
        None if accepted else answer.get("type"),
        started,
        time.monotonic() - started,
        answer.get("delivery") if accepted else None,
    )


def wait_for_202(url: str, *, within: float) -> list[Outcome]:
    """POST every 0.2 s until a 202; every outcome, the 202 last."""
    outcomes = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        outcomes.append(post(None, url))
        if outcomes[-1].status == 202:
            return outcomes
        time.sleep(0.2)
    raise AssertionError(f"no 202 within {within} s: {Counter(o.status for o in outcomes)}")


class Load:
    """`clients` threads POSTing to `url` one request at a time, each at most ~20 per second,
    while the `with` block runs; `outcomes` collects every answer."""

    def __init__(self, url: str, *, clients: int = 8) -> None:
        self.url = url
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def _client(self) -> None:
        with httpx.Client() as http:
            for _ in range(2000):  # bounded, whatever happens to the stop
                if self._stop.is_set():
                    return
                self.outcomes.append(post(http, self.url))
                time.sleep(0.05)

    def first_202_after(self, moment: float) -> Outcome | None:
        accepted = [o for o in list(self.outcomes) if o.status == 202 and o.started > moment]
        return min(accepted, key=lambda o: o.started, default=None)

    def wait_for_202_after(self, moment: float, *, within: float) -> Outcome:
        """The first request started after `moment` that got a 202; fail after `within` s."""
        deadline = time.monotonic() + within
        while (found := self.first_202_after(moment)) is None:
            assert time.monotonic() < deadline, f"no 202 within {within} s after the fault"
            time.sleep(0.1)
        return found

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(PUBLISH_TIMEOUT + 35)


def longest_503_run(outcomes: list[Outcome]) -> float:
    """Seconds from the start of the first to the end of the last of the longest run of 503s
    in a row (by the time each request started): how long callers were turned away."""
    longest, first = 0.0, None
    for outcome in sorted(outcomes, key=lambda o: o.started):
        if outcome.status != 503:
            first = None
            continue
        first = first or outcome
        longest = max(longest, outcome.ended - first.started)
    return longest


def assert_the_promise_holds(outcomes: list[Outcome], queued: list[str]) -> None:
    """Each 202 is on the queue once; the rest are timely 503s; nothing unknown was queued."""
    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) <= {202, 503}, statuses
    slowest = max(outcomes, key=lambda o: o.seconds)
    assert slowest.seconds < PUBLISH_TIMEOUT + MARGIN, slowest
    for refused in (o for o in outcomes if o.status == 503):
        assert refused.retry_after is not None, refused
        assert int(refused.retry_after) >= 1, refused
    copies = Counter(queued)
    accepted = [o.key for o in outcomes if o.status == 202]
    lost = [key for key in accepted if copies[key] != 1]
    assert not lost, f"{len(lost)} accepted events not on the queue exactly once"
    # At least once: a 503 may still have been enqueued (e.g. its confirm was lost).
    assert set(copies) <= {o.key for o in outcomes}


def log_records(folder: Path, logger: str | None = None) -> list[dict[str, Any]]:
    """The JSON records of the function logs (function-*.log) in `folder`, oldest first."""
    records = []
    for log in sorted(folder.glob("function-*.log")):
        for line in log.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if logger is None or record.get("logger") == logger:
                    records.append(record)
    return records
