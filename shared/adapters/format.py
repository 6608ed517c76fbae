"""What a sender format is, as data: where its alerts are, how it says "resolved", what its test
notifications look like, how its fields fill an event's fields by default, and its severity
words."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.vocabulary import SenderName

# Words most senders share; a sender's own table is layered on top.
COMMON_SEVERITIES: Mapping[str, str] = {
    **dict.fromkeys(
        [
            "critical",
            "crit",
            "page",
            "high",
            "urgent",
            "emergency",
            "emerg",
            "alert",
            "fatal",
            "error",
            "err",
            "severe",
            "disaster",
            "major",
        ],
        "critical",
    ),
    **dict.fromkeys(["warning", "warn", "medium", "moderate", "average", "minor"], "warning"),
    **dict.fromkeys(
        ["info", "informational", "information", "notice", "low", "none", "debug", "ok"], "info"
    ),
}

Spec = Any  # an expression in its JSON form; see shared.adapters.mapping


@dataclass(frozen=True)
class SenderFormat:
    """One sender's payload shape, declared as data."""

    name: SenderName  # the path under the function URL: POST <url>/<name>
    title: str
    base: Mapping[str, Spec]  # the base event fields (hostname, severity, source, ...)
    by_name: tuple[str, ...]  # where a field with no mapping is looked for; "{field}" = its name
    identity: tuple[Spec, ...]  # what makes an event's id: the same values, the same id
    batch: str | None = None  # the key of the list of alerts, when a request carries several
    status: Spec | None = None  # the alert's state
    resolved: frozenset[str] = frozenset()  # states (lower case) that mean "resolved"
    # What its test notifications carry: {path: pattern}s (shared.adapters.signatures); any match
    tests: tuple[Mapping[str, str], ...] = ()
    severities: Mapping[str, str] = field(default_factory=dict)

    def severity_words(self) -> dict[str, str]:
        return {**COMMON_SEVERITIES, **self.severities}
