"""The smoke test's alert: every event type's own model accepts it, and it is marked as a test."""

from __future__ import annotations

import json

import pytest

from deploy.manifest import Function, load_manifest
from deploy.smoke import HOST, SOURCE, first_secret, smoke_event


@pytest.mark.parametrize("fn", load_manifest(), ids=lambda fn: fn.name)
def test_the_alert_is_valid_for_its_type_marked_as_a_test_and_carries_no_optional_field(
    fn: Function,
) -> None:
    body = smoke_event(fn)

    model = fn.model
    event = model.model_validate_json(body)
    sent = json.loads(body)
    assert (event.hostname, event.source, event.severity) == (HOST, SOURCE, "info")
    optional = {k for k, f in model.model_fields.items() if not f.is_required()}
    assert set(sent) & optional == {"severity", "summary", "detected_at"}  # no vm_id, no IP


def test_the_first_of_several_secrets_is_the_one_used() -> None:
    assert first_secret("\n new-token , old-token\n") == "new-token"
