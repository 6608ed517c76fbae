"""The CloudEvents envelope build_message writes: its attributes, in order, and pydantic's data."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pytest

from shared.envelope import build_message, new_event_id
from shared.schemas import DiskSpaceLow, Event, VmIsolate
from shared.trace import TraceContext

TRACE = TraceContext("a" * 32, "b" * 16, sampled=True, tracestate="vendor=1")
EVENTS: list[Event] = [
    VmIsolate.model_validate_json(
        '{"hostname": "WEB-01.example.com.", "source": "edr", "reason": "beaconing",'
        ' "summary": "Überwachung: ⚠", "ip_address": "10.0.0.1", "details": {"n": 1.5}}'
    ),
    DiskSpaceLow.model_validate_json(
        '{"hostname": "db-7", "source": "zabbix", "mount_point": "C:\\\\data",'
        ' "used_percent": 97.5, "free_bytes": 1024}'
    ),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).event_type)
@pytest.mark.parametrize("trace", [None, TRACE], ids=["no-trace", "trace"])
def test_the_envelope_has_its_attributes_in_order_and_the_models_own_data(
    event: Event, trace: TraceContext | None
) -> None:
    event_type = type(event).event_type
    message = build_message(
        event, event_type=event_type, event_id="id-1", routing_key="r.k", trace=trace
    )

    envelope = json.loads(message.body)
    traced = {"traceparent": TRACE.traceparent, "tracestate": "vendor=1"} if trace else {}
    assert list(envelope) == [
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        *traced,
        "data",
    ]
    assert envelope == {
        "specversion": "1.0",
        "id": "id-1",
        "source": f"/event-relay/{event_type}",
        "type": f"event-relay.{event_type}",
        "subject": event.hostname,
        "time": envelope["time"],
        "datacontenttype": "application/json",
        **traced,
        "data": event.model_dump(mode="json"),
    }
    assert envelope["time"].endswith("Z")
    assert datetime.fromisoformat(envelope["time"]).timestamp() == pytest.approx(
        message.properties.timestamp, abs=1
    )
    assert message.body.endswith(b',"data":' + event.model_dump_json().encode() + b"}")
    assert message.properties.message_id == "id-1"
    assert message.properties.type == f"event-relay.{event_type}"
    assert message.properties.headers == (traced or None)


def test_text_stays_utf_8_and_the_host_name_is_normalised() -> None:
    message = build_message(EVENTS[0], event_type="vm_isolate", event_id="i", routing_key="k")

    assert "Überwachung: ⚠".encode() in message.body
    assert json.loads(message.body)["subject"] == "web-01.example.com"


def test_an_event_id_is_a_random_version_4_uuid_as_uuid4_writes_it() -> None:
    ids = [new_event_id() for _ in range(2000)]

    assert len(set(ids)) == len(ids)
    for event_id in ids:
        parsed = uuid.UUID(event_id)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == event_id
    # Every bit but the six fixed ones varies.
    ints = [uuid.UUID(event_id).int for event_id in ids]
    fixed = (0xF << 76) | (0x3 << 62)
    varying = 0
    for value in ints:
        varying |= value ^ ints[0]
    assert varying == (2**128 - 1) & ~fixed
