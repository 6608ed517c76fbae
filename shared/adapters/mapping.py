"""The mapping language: how a sender's fields fill an event's fields.

A mapping is a JSON object, one entry per event field. Each value is an expression:

    "alerts[].labels.instance | strip_port"        a dotted path, then transforms
    ["alerts[].labels.hostname", "alerts[].labels.instance | strip_port"]
                                                     alternatives: the first usable value wins
    "=grafana"                                      a literal (everything after "=")
    {"labels": "alerts[].labels", "url": "externalURL"}
                                                     an object built from expressions (details)

Paths: `name.name`; `name[N]` picks item N of a list; `alerts[]` is the alert being adapted in
a batch; `result."a.b"` quotes a key holding dots. A path that is absent, null or "" has no value; a
transform that cannot apply (an unknown severity word, the zero time) gives no value either.
A value the field cannot take (the `check` given to `evaluate`: not a host name, not a number...)
is unusable. Either way the next alternative is tried; when none is usable, `Found` lists every
place looked in and why each value found was refused, so the 422 can say so without inventing a
value. A transform that fails on a sender's value (raises ValueError, OverflowError or OSError)
leaves the value as it was, like a conversion that cannot convert, so the check refuses it rather
than the request failing. Transforms are listed in `shared.adapters.transforms`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.adapters.transforms import Transform, transform
from shared.errors import ConfigError

CURRENT = -1  # the index "[]" stands for: the alert being adapted
_NAME = r'[^.\[\]|"=\s]+'
_SEGMENT = re.compile(rf'\s*(?:"([^"]+)"|({_NAME}))(?:\[(\d*)\])?\s*')


@dataclass(frozen=True)
class Path:
    """A dotted path: each step is a key, or a list index (CURRENT for "[]")."""

    steps: tuple[str | int, ...]

    def find(self, document: Any, current: int | None) -> Any:
        node = document
        for step in self.steps:
            if isinstance(step, str):
                node = node.get(step) if isinstance(node, dict) else None
            else:
                index = current if step == CURRENT else step
                ok = isinstance(node, list) and index is not None and 0 <= index < len(node)
                node = node[index] if ok else None
            if node is None:
                return None
        return node

    def render(self, current: int | None) -> str:
        """The path as a person reads it, "[]" replaced by the current alert's index."""
        text = ""
        for step in self.steps:
            if isinstance(step, int):
                text += f"[{current if step == CURRENT else step}]"
            else:
                name = step if re.fullmatch(_NAME, step) else f'"{step}"'
                text += f".{name}" if text else name
        return text

    def pointer(self, current: int | None) -> str:
        """The JSON pointer (RFC 6901) of this path in the sender's body."""
        parts = [
            str(current if s == CURRENT else s)
            if isinstance(s, int)
            else s.replace("~", "~0").replace("/", "~1")
            for s in self.steps
        ]
        return "/" + "/".join(parts)


@dataclass(frozen=True)
class Alternative:
    """One way to get a value: a path or a literal, then transforms."""

    path: Path | None
    literal: str | None
    transforms: tuple[Transform, ...]
    names: tuple[str, ...] = ()  # the transforms as written, for messages

    def render(self, current: int | None) -> str:
        """As written, "[]" replaced by the current alert's index."""
        source = f"={self.literal}" if self.path is None else self.path.render(current)
        return " | ".join([source, *self.names])

    def value(self, document: Any, current: int | None, severities: Mapping[str, str]) -> Any:
        value = self.literal if self.path is None else self.path.find(document, current)
        for step in self.transforms:
            if value is None or value == "":
                return None
            try:
                value = step(value, severities)
            except (ValueError, OverflowError, OSError):
                break  # a hostile value must not fail the request: the schema refuses it
        return None if value == "" else value


@dataclass(frozen=True)
class Unusable:
    """A value an alternative found that the field cannot take, and the schema's reason."""

    alternative: Alternative
    type: str  # the schema's error type: value_error, int_type...
    detail: str  # its message, which never repeats the value


# Whether a value can be the field: None if it can, else (error type, message).
Check = Callable[[Any], tuple[str, str] | None]


@dataclass(frozen=True)
class Found:
    """A field's value and where it came from, or (value None) every place looked in and the
    values found there that the field could not take."""

    value: Any
    source: Alternative | None
    tried: tuple[Alternative, ...]
    unusable: tuple[Unusable, ...] = ()


Expression = tuple[Alternative, ...] | dict[str, "Expression"]


def parse_expression(spec: Any, *, where: str) -> Expression:
    """An expression from its JSON form; ConfigError names `where` it is wrong."""
    if isinstance(spec, dict):
        return {
            str(key): parse_expression(value, where=f"{where}.{key}") for key, value in spec.items()
        }
    alternatives = spec if isinstance(spec, list) else [spec]
    if not alternatives or not all(isinstance(a, str) for a in alternatives):
        raise ConfigError(f"{where}: an expression is a string, a list of strings or an object")
    return tuple(parse_alternative(a, where=where) for a in alternatives)


def parse_alternative(text: str, *, where: str) -> Alternative:
    source, *calls = (part.strip() for part in text.split("|"))
    names = tuple(calls)
    transforms = tuple(transform(name, where=where) for name in names)
    if source.startswith("="):
        return Alternative(None, source[1:].strip(), transforms, names)
    return Alternative(parse_path(source, where=where), None, transforms, names)


def parse_path(text: str, *, where: str) -> Path:
    steps: list[str | int] = []
    for part in _split_dots(text):
        match = _SEGMENT.fullmatch(part)
        if not match:
            raise ConfigError(f"{where}: {text!r} is not a path (name.name, name[0], alerts[])")
        quoted, name, index = match.groups()
        steps.append(quoted or name)
        if index is not None:
            steps.append(CURRENT if index == "" else int(index))
    return Path(tuple(steps))


def evaluate(
    expression: Expression,
    document: Any,
    current: int | None,
    severities: Mapping[str, str],
    check: Check | None = None,
) -> Found:
    """The first value of `expression` in `document` that passes `check`, for the alert at
    index `current`. An object's parts are not checked: the schema validates the whole."""
    if isinstance(expression, dict):
        built = {}
        for key, part in expression.items():
            found = evaluate(part, document, current, severities)
            if found.value is not None:
                built[key] = found.value
        return Found(built or None, None, ())
    unusable: list[Unusable] = []
    for alternative in expression:
        value = alternative.value(document, current, severities)
        if value is None:
            continue
        refused = None if check is None else check(value)
        if refused is None:
            return Found(value, alternative, expression)
        unusable.append(Unusable(alternative, *refused))
    return Found(None, None, expression, tuple(unusable))


def uses_current(expression: Expression) -> bool:
    """Whether any path of `expression` contains "[]"."""
    if isinstance(expression, dict):
        return any(uses_current(part) for part in expression.values())
    return any(a.path is not None and CURRENT in a.path.steps for a in expression)


def _split_dots(text: str) -> list[str]:
    """Split on dots outside ["quoted"] keys."""
    return re.split(r'\.(?=(?:[^"]*"[^"]*")*[^"]*$)', text)
