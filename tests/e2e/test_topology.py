"""`python -m deploy topology` on the test broker: what it declares, twice, and dead-lettering."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from pika.adapters.blocking_connection import BlockingChannel

from deploy.__main__ import main
from deploy.broker import BrokerNode
from deploy.manifest import MANIFEST, load_manifest


def manifest_on(folder: Path, exchange: str) -> Path:
    """The repository's manifest on an exchange of a test's own, so queue names are too."""
    raw = yaml.safe_load(MANIFEST.read_text())
    raw["defaults"]["env"]["AMQP_EXCHANGE"] = exchange
    path = folder / "functions.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return manifest_on(tmp_path_factory.mktemp("topology"), f"topo-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def exchange(manifest: Path) -> str:
    return load_manifest(manifest)[0].exchange


pytestmark = pytest.mark.usefixtures("broker_settings")


def topology(manifest: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["--manifest", str(manifest), "topology", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def snapshot(broker: BrokerNode, exchange: str) -> list[str]:
    """What rabbitmqctl reports of the exchanges, queues and bindings named after `exchange`."""
    lines = []
    for what, columns in (
        ("list_exchanges", ["name", "type", "durable", "arguments"]),
        ("list_queues", ["name", "type", "durable", "arguments"]),
        ("list_bindings", ["source_name", "destination_name", "routing_key", "arguments"]),
    ):
        output = broker.ctl(what, "--quiet", "--no-table-headers", *columns)
        lines += sorted(f"{what}\t{line}" for line in output.splitlines() if exchange in line)
    return lines


def test_the_plan_goes_exchange_queue_bind(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = topology(manifest, capsys, "--dry-run")

    methods = [line.split()[0] for line in output.splitlines()]
    assert code == 0
    assert methods == ["exchange.declare"] * 2 + ["queue.declare"] * 5 + ["queue.bind"] * 5


def test_a_second_run_finds_everything_and_changes_nothing(
    manifest: Path, exchange: str, broker: BrokerNode, capsys: pytest.CaptureFixture[str]
) -> None:
    topology(manifest, capsys)
    before = snapshot(broker, exchange)

    code, output = topology(manifest, capsys)

    assert code == 0
    assert snapshot(broker, exchange) == before
    declares = [line for line in output.splitlines() if ".declare " in line]
    assert len(declares) == 7
    assert all(line.endswith(": exists") for line in declares), output
    queues = [line.split("\t") for line in before if line.startswith("list_queues")]
    assert len(queues) == 5
    assert {q[2] for q in queues} == {"quorum"}
    assert sum(f"{exchange}.dead-letter" in q[4] for q in queues) == 4  # x-dead-letter-exchange
    bindings = {tuple(line.split("\t")[1:4]) for line in before if "list_bindings" in line}
    assert (exchange, f"{exchange}.disk_space_low", "disk.space-low") in bindings


def test_a_rejected_message_lands_in_the_dead_letter_queue(
    manifest: Path, exchange: str, amqp_channel: BlockingChannel, capsys: pytest.CaptureFixture[str]
) -> None:
    topology(manifest, capsys)
    amqp_channel.basic_publish(exchange, "service.down", b'{"poison": true}')

    method, _, _ = _get(amqp_channel, f"{exchange}.service_down")
    amqp_channel.basic_reject(method.delivery_tag, requeue=False)

    _, properties, body = _get(amqp_channel, f"{exchange}.dead-letter", ack=True)
    assert body == b'{"poison": true}'
    [death] = properties.headers["x-death"]
    assert death["queue"] == f"{exchange}.service_down"
    assert death["reason"] == "rejected"


def test_another_queue_type_on_existing_queues_is_a_clear_406(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topology(manifest, capsys)

    code, output = topology(manifest, capsys, "--queue-type", "classic")

    assert code == 1
    assert "PRECONDITION_FAILED" in output
    assert "x-queue-type" in output
    assert "Traceback" not in output


def test_classic_queues_by_option(
    broker: BrokerNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exchange = f"classic-{uuid.uuid4().hex[:8]}"
    path = manifest_on(tmp_path, exchange)

    code, _ = topology(path, capsys, "--queue-type", "classic", "--only", "vm_isolate")

    assert code == 0
    queues = [line.split("\t") for line in snapshot(broker, exchange) if "list_queues" in line]
    assert {q[2] for q in queues} == {"classic"}


def _get(channel: BlockingChannel, queue: str, *, ack: bool = False) -> tuple:  # type: ignore[type-arg]
    for _ in range(50):
        method, properties, body = channel.basic_get(queue, auto_ack=ack)
        if method is not None:
            return method, properties, body
        channel.connection.sleep(0.05)
    raise AssertionError(f"nothing on {queue}")
