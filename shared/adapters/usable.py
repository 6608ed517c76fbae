"""Whether a sender's value can be one field of an event: validated alone, as the model would.

A mapping's alternatives go on to the next when a value is unusable, so every field is checked
with its own annotation and constraints, strict, from JSON: the same rules `validate_event`
applies to the whole event, field by field.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from shared.adapters.mapping import Check
from shared.schemas import Event


class FieldCheck:
    """One field's check; its validator is built at its first use (a cold start pays for none)."""

    def __init__(self, model: type[Event], name: str) -> None:
        self._field = model.model_fields[name]
        self._adapter: TypeAdapter[Any] | None = None

    def __call__(self, value: Any) -> tuple[str, str] | None:
        if self._adapter is None:
            self._adapter = TypeAdapter(self._field.rebuild_annotation())
        try:
            self._adapter.validate_json(json.dumps(value), strict=True)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
            return first["type"], first["msg"]
        return None


@cache
def field_check(model: type[Event], name: str) -> Check:
    """The check of field `name` of `model`, shared by every sender's adapter."""
    return FieldCheck(model, name)
