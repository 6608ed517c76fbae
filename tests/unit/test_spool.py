"""shared.spool: what a spooled message carries is what the drain republishes, exactly."""

from __future__ import annotations

import json

import pytest

from shared.envelope import build_message
from shared.errors import SpooledMessageError
from shared.schemas import VmIsolate
from shared.spool import spooled_attributes, unspooled
from tests.e2e.conftest import EVENT

PROPERTIES = ("message_id", "type", "timestamp", "content_type", "content_encoding", "app_id")


def message(routing_suffix: str = "") -> tuple[bytes, dict[str, str]]:
    event = VmIsolate.model_validate_json(json.dumps(EVENT))
    built = build_message(
        event,
        event_type="vm_isolate" + routing_suffix,
        event_id="evt-7",
        routing_key="vm.isolate" + routing_suffix,
    )
    return built.body, spooled_attributes(built, "event-relay")


@pytest.mark.parametrize("suffix", ["", ".resolved", ".test"])
def test_a_spooled_message_comes_back_as_it_went(suffix: str) -> None:
    body, attributes = message(suffix)

    exchange, back = unspooled(body, attributes)

    assert exchange == "event-relay"
    assert back.routing_key == "vm.isolate" + suffix
    assert back.body == body
    assert back.properties.delivery_mode == 2
    assert all(isinstance(value, str) for value in attributes.values())  # Pub/Sub's rule
    for name in PROPERTIES:
        assert str(getattr(back.properties, name)) == attributes[name]


@pytest.mark.parametrize(
    ("change", "reason", "permanent"),
    [
        ({"body_sha256": "0" * 64}, "does not match its body_sha256", True),
        ({"routing_key": "service.down"}, "is not event-relay.vm_isolate's", True),
        ({"message_id": "evt-8"}, "id or type is not the message's", True),
        ({"timestamp": "soon"}, "malformed", True),
        ({"type": "event-relay.vm_quarantine", "routing_key": "vm.quarantine"}, "unknown", False),
    ],
)
def test_a_message_not_as_spooled_is_refused(
    change: dict[str, str], reason: str, permanent: bool
) -> None:
    body, attributes = message()

    with pytest.raises(SpooledMessageError, match=reason) as refused:
        unspooled(body, {**attributes, **change})

    assert refused.value.permanent is permanent
