"""Turn one sender payload into candidate events, and validate them like a canonical event.

Adapted events are serialized to JSON and validated by `validate_event`, the very function a
canonical payload goes through: strict JSON, the same model, the same error types. Conversions
are explicit in the mapping (`| int`, `| time`), so strictness means the same thing on every path.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

from shared.adapters.defaults import defaults_for
from shared.adapters.format import SenderFormat, Spec
from shared.adapters.mapping import (
    CURRENT,
    Expression,
    Found,
    evaluate,
    parse_expression,
    uses_current,
)
from shared.errors import ConfigError, ValidationFailedError
from shared.request_body import validate_event
from shared.schemas import Event

# Event ids are UUIDv5 in this namespace: the same alert, the same id, on every retry.
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:event-relay:sender-event")


@dataclass(frozen=True)
class Candidate:
    """One alert of a sender payload, adapted to the event type's fields."""

    pointer: str  # where the alert is in the sender's body: "/alerts/0", or "" for the whole
    index: int | None
    event_id: str
    resolved: bool
    fields: dict[str, Any]
    found: dict[str, Found]


@dataclass(frozen=True)
class Refusal:
    pointer: str
    errors: list[dict[str, Any]]


class Adapter:
    """Adapts one sender's payloads to one event type, with the mapping built at start."""

    def __init__(
        self,
        sender: SenderFormat,
        event_type: str,
        model: type[Event],
        overrides: Mapping[str, Spec] | None = None,
        *,
        forward_resolved: bool = False,
    ) -> None:
        self.sender = sender
        self.forward_resolved = forward_resolved
        self.event_type = event_type
        self.model = model
        where = f"SENDER_MAPPINGS.{sender.name}"
        unknown = sorted(set(overrides or {}) - set(model.model_fields))
        if unknown:
            raise ConfigError(f"{where}: {model.__name__} has no field {', '.join(unknown)}")
        specs = {**sender.base, **defaults_for(event_type, sender.name), **(overrides or {})}
        self.mapping: dict[str, Expression] = {}
        for name in model.model_fields:
            spec = specs[name] if name in specs else _by_name(sender, model, name)
            if spec is not None:
                self.mapping[name] = self._parse(spec, f"{where}.{name}")
        self._identity = [self._parse(s, f"{sender.name} identity") for s in sender.identity]
        self._status = None if sender.status is None else self._parse(sender.status, "status")
        self._severities = sender.severity_words()

    def candidates(self, document: dict[str, Any]) -> tuple[list[Candidate], list[str]]:
        """The events of `document` and the pointers of the resolved alerts left out."""
        if self.sender.batch is None:
            every = [self._candidate(document, None)]
        else:
            every = [self._candidate(document, i) for i in range(len(self._alerts(document)))]
        kept = [c for c in every if self.forward_resolved or not c.resolved]
        return kept, [c.pointer for c in every if c not in kept]

    def _alerts(self, document: dict[str, Any]) -> list[Any]:
        alerts = document.get(self.sender.batch or "")
        if not isinstance(alerts, list):
            raise ValidationFailedError(
                f"A {self.sender.title} payload carries a list of alerts.",
                errors=[
                    {
                        "pointer": f"/{self.sender.batch}",
                        "type": "missing" if alerts is None else "list_type",
                        "detail": f"{self.sender.batch}: looked for a list of alerts",
                    }
                ],
            )
        return alerts

    def validate(self, candidate: Candidate) -> Event | Refusal:
        """The event, or what is wrong with it, each error naming the sender field it came from."""
        try:
            return validate_event(self.model, json.dumps(candidate.fields).encode())
        except ValidationFailedError as error:
            return Refusal(
                candidate.pointer, [self._explain(e, candidate) for e in error.errors or []]
            )

    def _candidate(self, document: dict[str, Any], index: int | None) -> Candidate:
        found = {
            name: evaluate(expression, document, index, self._severities)
            for name, expression in self.mapping.items()
        }
        status = None
        if self._status is not None:
            status = evaluate(self._status, document, index, self._severities).value
        resolved = str(status).lower() in self.sender.resolved
        return Candidate(
            pointer="" if index is None else f"/{self.sender.batch}/{index}",
            index=index,
            event_id=self._event_id(document, index, resolved),
            resolved=resolved,
            fields={name: f.value for name, f in found.items() if f.value is not None},
            found=found,
        )

    def _event_id(self, document: dict[str, Any], index: int | None, resolved: bool) -> str:
        values = [evaluate(e, document, index, self._severities).value for e in self._identity]
        if any(v is None for v in values):  # fall back on the alert's whole content
            values = [document if index is None else document[self.sender.batch or ""][index]]
        key = json.dumps(
            [self.event_type, self.sender.name, resolved, *values],
            sort_keys=True,
            separators=(",", ":"),
        )
        return str(uuid.uuid5(ID_NAMESPACE, key))

    def _explain(self, error: dict[str, Any], candidate: Candidate) -> dict[str, Any]:
        field, *rest = error["pointer"].lstrip("/").split("/")
        found = candidate.found.get(field)
        pointer, detail = candidate.pointer, f"{field}: {error['detail']}"
        if found is None:
            detail = f"{field}: no mapping from {self.sender.title}; set one in SENDER_MAPPINGS"
        elif found.source is None and found.tried:
            tried = ", ".join(a.render(candidate.index) for a in found.tried)
            detail = f"{field}: looked for {tried}"
        elif found.source is not None:
            if found.source.path is not None:
                pointer = found.source.path.pointer(candidate.index)
                pointer += "".join(f"/{part}" for part in rest)
            detail = f"{field} (from {found.source.render(candidate.index)}): {error['detail']}"
        return {"pointer": pointer, "type": error["type"], "detail": detail}

    def _parse(self, spec: Spec, where: str) -> Expression:
        expression = parse_expression(spec, where=where)
        if uses_current(expression) and self.sender.batch is None:
            raise ConfigError(f"{where}: [] is for a batch's alerts; {self.sender.title} has none")
        return expression


def _by_name(sender: SenderFormat, model: type[Event], name: str) -> list[str]:
    """Where a field with no mapping is looked for: under its own name, converted to its type."""
    types = get_args(model.model_fields[name].annotation) or (model.model_fields[name].annotation,)
    convert = next(
        (
            f" | {t}"
            for kind, t in ((int, "int"), (float, "float"), (datetime, "time"))
            if kind in types
        ),
        "",
    )
    return [place.format(field=name) + convert for place in sender.by_name]


__all__ = ["CURRENT", "Adapter", "Candidate", "Refusal"]
