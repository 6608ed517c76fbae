"""How a sender's test notification is told apart from an alert: its signatures, as data.

A signature maps paths of the mapping language to regular expressions: an alert matches when
every path holds a string the expression matches whole. An alert matching any of its sender's
signatures is a test notification (see docs/senders.md, "Test notifications").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.adapters.mapping import Path, parse_path


@dataclass(frozen=True)
class Signature:
    """Paths and the patterns their values must match, all of them."""

    parts: tuple[tuple[Path, re.Pattern[str]], ...]

    def matches(self, document: Any, current: int | None) -> bool:
        for path, pattern in self.parts:
            value = path.find(document, current)
            if not isinstance(value, str) or not pattern.fullmatch(value):
                return False
        return True


def parse_signature(spec: Mapping[str, str], *, where: str) -> Signature:
    return Signature(
        tuple(
            (parse_path(path, where=where), re.compile(pattern, re.DOTALL))
            for path, pattern in spec.items()
        )
    )
