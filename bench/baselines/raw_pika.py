"""(d) Raw pika, no HTTP: one thread publishing over TLS, one message at a time, each waiting for
its confirm. The broker ceiling of a sequential publisher.

    python -m bench.baselines.raw_pika EVENT_FILE SECONDS MAX_MESSAGES

Reads the broker settings from the environment (see common.py) and prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import uuid
from pathlib import Path

import pika

from bench.baselines.common import (
    EXCHANGE,
    ROUTING_KEY,
    VmIsolateAlert,
    envelope,
    pika_parameters,
    pika_properties,
)


def percentile(sorted_values: list[float], share: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(share * len(sorted_values)))]


def peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> None:
    event_file, seconds, max_messages = argv[0], float(argv[1]), int(argv[2])
    alert = VmIsolateAlert.model_validate_json(Path(event_file).read_bytes())
    connection = pika.BlockingConnection(pika_parameters())
    channel = connection.channel()
    channel.confirm_delivery()
    latencies: list[float] = []
    failures = 0
    cpu_at_start = cpu_seconds()
    started = time.perf_counter()
    deadline = started + seconds
    now = started
    while now < deadline and len(latencies) < max_messages:
        event_id = str(uuid.uuid4())
        body, properties = envelope(alert, event_id), pika_properties(event_id)
        try:
            channel.basic_publish(EXCHANGE, ROUTING_KEY, body, properties, mandatory=True)
        except pika.exceptions.AMQPError:
            failures += 1
            break
        done = time.perf_counter()
        latencies.append(done - now)
        now = done
    elapsed = now - started
    cpu = cpu_seconds() - cpu_at_start  # the publishing loop only, like the servers' cells
    connection.close()
    latencies.sort()
    print(
        json.dumps(
            {
                "completed": len(latencies) + failures,
                "confirmed": len(latencies),
                "failures": failures,
                "elapsed_s": elapsed,
                "cpu_s": cpu,
                "message_bytes": len(body),
                "p50_us": percentile(latencies, 0.50) * 1e6,
                "p90_us": percentile(latencies, 0.90) * 1e6,
                "p99_us": percentile(latencies, 0.99) * 1e6,
                "max_us": (latencies[-1] if latencies else 0.0) * 1e6,
                "peak_rss_kib": peak_rss_kib(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
