"""Turn one sender payload into candidate events, and validate them like a canonical event.

Each field takes the first value of its mapping that the field can hold (`shared.adapters.usable`);
the adapted event is then serialized to JSON and validated by `validate_event`, the very function
a canonical payload goes through: strict JSON, the same model, the same error types. Conversions
are explicit in the mapping (`| int`, `| time`), so strictness means the same thing on every path.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, NotRequired, TypedDict, get_args

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
from shared.adapters.signatures import parse_signature
from shared.adapters.usable import field_check
from shared.errors import ConfigError, ValidationFailedError
from shared.request_body import validate_event
from shared.schemas import Event
from shared.vocabulary import RESOLVED, TEST

# Event ids are UUIDv5 in this namespace: the same alert, the same id, on every retry.
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:event-relay:sender-event")

# What an alert is. A resolved alert or a test notification is skipped unless its kind is
# forwarded, then published under "<routing key>.<kind>" and "event-relay.<event type>.<kind>".
Kind = Literal["alert", "resolved", "test"]
ALERT: Final = "alert"
SKIP_REASONS: Mapping[str, str] = {RESOLVED: "resolved", TEST: "test-notification"}


class Skip(TypedDict):
    """An alert left out, in a sender path's answer and log line."""

    pointer: str  # where it is in the sender's body: "/alerts/2", or "" for the whole
    reason: str  # "resolved" or "test-notification"
    # A forwarded test that makes no valid event: why. A test is never refused: the test
    # button gets its 202, and the refused alerts an operator watches stay real ones.
    errors: NotRequired[list[dict[str, Any]]]


@dataclass(frozen=True)
class Candidate:
    """One alert of a sender payload, adapted to the event type's fields."""

    pointer: str  # where the alert is in the sender's body: "/alerts/0", or "" for the whole
    index: int | None
    event_id: str
    kind: Kind
    fields: dict[str, Any]
    found: dict[str, Found]

    @property
    def suffix(self) -> str:
        """What its routing key and event type end with: "", ".resolved" or ".test"."""
        return "" if self.kind == ALERT else f".{self.kind}"


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
        forward_tests: bool = False,
    ) -> None:
        self.sender = sender
        self.forwarded = {ALERT: True, RESOLVED: forward_resolved, TEST: forward_tests}
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
        # A value goes on to the next alternative unless the field can hold it; an object
        # (details) is validated whole by the model.
        self._checks = {
            name: field_check(model, name)
            for name, expression in self.mapping.items()
            if not isinstance(expression, dict)
        }
        self._identity = [self._parse(s, f"{sender.name} identity") for s in sender.identity]
        self._status = None if sender.status is None else self._parse(sender.status, "status")
        self._tests = [parse_signature(t, where=f"{sender.name} tests") for t in sender.tests]
        self._severities = sender.severity_words()

    def candidates(self, document: dict[str, Any]) -> tuple[list[Candidate], list[Skip]]:
        """The events of `document`, and the alerts left out (resolved or tests) and why."""
        if self.sender.batch is None:
            every = [self._candidate(document, None)]
        else:
            every = [self._candidate(document, i) for i in range(len(self._alerts(document)))]
        kept: list[Candidate] = []
        skipped: list[Skip] = []
        for candidate in every:
            skip = self._skip(candidate)
            if skip is None:
                kept.append(candidate)
            else:
                skipped.append(skip)
        return kept, skipped

    def _skip(self, candidate: Candidate) -> Skip | None:
        """Why `candidate` is left out, or None when it is to be published."""
        if candidate.kind == ALERT:
            return None
        reason = SKIP_REASONS[candidate.kind]
        if not self.forwarded[candidate.kind]:
            return Skip(pointer=candidate.pointer, reason=reason)
        if candidate.kind == TEST:
            outcome = self.validate(candidate)
            if isinstance(outcome, Refusal):
                return Skip(pointer=candidate.pointer, reason=reason, errors=outcome.errors)
        return None

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
        """The event, or what is wrong with it, each error naming the sender fields it came
        from. A field whose places held only values it cannot take is refused, even when the
        model would do without it: a value was sent, and it must not be dropped unsaid."""
        errors = [
            {"pointer": f"/{name}", "type": "missing", "detail": ""}
            for name, found in candidate.found.items()
            if found.value is None and found.unusable
        ]
        try:
            event = validate_event(self.model, json.dumps(candidate.fields).encode())
        except ValidationFailedError as error:
            reported = {e["pointer"] for e in errors}
            errors += [e for e in error.errors or [] if e["pointer"] not in reported]
        else:
            if not errors:
                return event
        return Refusal(candidate.pointer, [self._explain(e, candidate) for e in errors])

    def _candidate(self, document: dict[str, Any], index: int | None) -> Candidate:
        found = {
            name: evaluate(expression, document, index, self._severities, self._checks.get(name))
            for name, expression in self.mapping.items()
        }
        kind: Kind = ALERT
        if any(signature.matches(document, index) for signature in self._tests):
            kind = TEST  # a test never acts, whatever its state
        elif self._status is not None:
            status = evaluate(self._status, document, index, self._severities).value
            kind = RESOLVED if str(status).lower() in self.sender.resolved else ALERT
        return Candidate(
            pointer="" if index is None else f"/{self.sender.batch}/{index}",
            index=index,
            event_id=self._event_id(document, index, kind == RESOLVED),
            kind=kind,
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
        pointer, error_type = candidate.pointer, error["type"]
        detail = f"{field}: {error['detail']}"
        if found is None:
            detail = f"{field}: no mapping from {self.sender.title}; set one in SENDER_MAPPINGS"
        elif found.source is None and found.tried:
            detail = f"{field}: {_none_usable(found, candidate.index)}"
            if found.unusable:  # point at the last value refused, with its reason's type
                last = found.unusable[-1]
                error_type = last.type
                if last.alternative.path is not None:
                    pointer = last.alternative.path.pointer(candidate.index)
        elif found.source is not None:
            if found.source.path is not None:
                pointer = found.source.path.pointer(candidate.index)
                pointer += "".join(f"/{part}" for part in rest)
            detail = f"{field} (from {found.source.render(candidate.index)}): {error['detail']}"
        return {"pointer": pointer, "type": error_type, "detail": detail}

    def _parse(self, spec: Spec, where: str) -> Expression:
        expression = parse_expression(spec, where=where)
        if uses_current(expression) and self.sender.batch is None:
            raise ConfigError(f"{where}: [] is for a batch's alerts; {self.sender.title} has none")
        return expression


def _none_usable(found: Found, index: int | None) -> str:
    """Every place looked in, in order, each value found there with the reason it was refused."""
    reasons = {u.alternative: f" ({u.detail})" for u in found.unusable}
    places = [a.render(index) + reasons.get(a, "") for a in found.tried]
    return f"looked for {', '.join(places)}; none held a usable value"


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


__all__ = ["ALERT", "CURRENT", "Adapter", "Candidate", "Kind", "Refusal", "Skip"]
