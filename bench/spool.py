"""Row (s)'s spool: Google's Pub/Sub emulator with the topic (s) publishes to, and a pull
subscription that counts what it took, as the queue counts what the other rows published."""

from __future__ import annotations

from pathlib import Path

from deploy.pubsub_emulator import PubSubEmulator

TOPIC = "bench-spool"


class BenchSpool:
    """The emulator, started and stopped by this object."""

    def __init__(self, work_dir: Path) -> None:
        self._emulator = PubSubEmulator(work_dir / "pubsub").start()
        try:
            self._topic = self._emulator.create_topic(TOPIC)
            self._emulator.create_subscription(f"{TOPIC}-count", TOPIC)
        except BaseException:
            self._emulator.stop()
            raise

    @property
    def env(self) -> dict[str, str]:
        """What (s) needs to spool there."""
        return {"SPOOL_TOPIC": self._topic, **self._emulator.client_env()}

    def drain(self) -> int:
        """Take everything the topic got since the last drain; how many messages."""
        taken = 0
        while batch := self._emulator.pull(f"{TOPIC}-count", wait=0.5, max_messages=1000):
            taken += len(batch)
        return taken

    def stop(self) -> None:
        self._emulator.stop()
