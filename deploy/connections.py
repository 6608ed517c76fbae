"""Say which broker node each local function publishes through, as its workers (re)connect.

The functions log every connection they open ("connected to the broker", with the broker's
host:port); a thread follows their log files and names the node behind each port. That is the
function's own account, written when it happens: a failover to another node shows at once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from deploy.broker import BrokerNode

PUBLISHER_LOGGER = "event_relay.publisher"


@contextmanager
def report_connections(
    logs: dict[str, Path],
    nodes: Sequence[BrokerNode],
    say: Callable[[str], None],
    *,
    interval: float = 0.5,
) -> Iterator[None]:
    """While the block runs, say "<function> publishes through node <name>" for each new
    connection logged in `logs` (function name -> its log file), from the end of each file."""
    node_at = {f"{node.host}:{node.port}": node.node_name for node in nodes}
    offsets = {name: path.stat().st_size if path.exists() else 0 for name, path in logs.items()}
    stop = threading.Event()

    def follow() -> None:
        while not stop.wait(interval):
            for name, path in logs.items():
                for record in _new_records(path, offsets, name):
                    broker = str(record.get("broker", ""))
                    if record.get("logger") == PUBLISHER_LOGGER and broker:
                        node = node_at.get(broker, "a broker not started here")
                        say(f"{name} publishes through node {node} ({broker})")

    thread = threading.Thread(target=follow, name="report-connections", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(interval + 1)


def _new_records(path: Path, offsets: dict[str, int], name: str) -> list[dict[str, object]]:
    """The JSON records appended to `path` since the last call; a partial last line waits."""
    try:
        with path.open("rb") as log:
            log.seek(offsets[name])
            data = log.read()
    except OSError:
        return []
    complete = data[: data.rfind(b"\n") + 1]
    offsets[name] += len(complete)
    records = []
    for line in complete.splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a traceback or a server's own line
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
