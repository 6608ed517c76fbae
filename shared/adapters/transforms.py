"""Transforms of the mapping language: `path | name` or `path | name(argument)`.

Each turns a sender's value into what the event field expects. A transform that does not apply
returns None (no value: the next alternative is tried), except the conversions (`int`, `float`)
which leave a value they cannot convert as it is, so the schema refuses it and says where it
came from.

    strip_port   "web-01:9100" → "web-01"; "http://web-01:8080/x" → "web-01"; "[::1]:9100" → "::1";
                 a malformed URL is left as it is
    lower, upper, trim
    first        the first item of a list, or of a comma-separated string
    last_word    the last space-separated word ("project vm-name" → "vm-name")
    tag(name)    the value of `name:value` in a tag list or comma-separated string
    int, float   a number from a numeric string ("95" → 95, "95.5" → 95.5, "95%" → 95.0)
    text         a number or boolean as a string
    clean        CRLF → LF, other control characters removed, trimmed
    truncate(n)  at most n characters
    time         RFC 3339 (nanoseconds allowed) or Unix seconds/milliseconds → RFC 3339; the
                 zero time 0001-01-01 and Unix time 0 have no value
    severity     the sender's severity word → info, warning or critical; unknown: no value
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from shared.errors import ConfigError

Transform = Callable[[Any, Mapping[str, str]], Any]

_CALL = re.compile(r"([a-z_]+)(?:\((.*)\))?")
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:?\d\d)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_MILLISECONDS_AFTER = 100_000_000_000  # a Unix time above this is in milliseconds (year 5138)


def _strip_port(value: Any, _: Mapping[str, str]) -> Any:
    if not isinstance(value, str):
        return value
    if "://" in value:
        try:
            return urlsplit(value).hostname or None
        except ValueError:  # "http://[::1", "http://[abc]:80": left for the schema to refuse
            return value
    if value.startswith("["):  # [IPv6]:port
        return value[1:].partition("]")[0] or None
    host, colon, port = value.rpartition(":")
    return host if colon and port.isdigit() and ":" not in host else value


def _first(value: Any, _: Mapping[str, str]) -> Any:
    if isinstance(value, list):
        return value[0] if value else None
    if isinstance(value, str):
        return value.split(",")[0].strip()
    return value


def _tag(name: str, value: Any, _: Mapping[str, str]) -> Any:
    tags = value if isinstance(value, list) else str(value).split(",")
    for tag in tags:
        key, colon, tag_value = str(tag).strip().partition(":")
        if colon and key == name and tag_value:
            return tag_value
    return None


def _number(kind: type[int] | type[float], value: Any, _: Mapping[str, str]) -> Any:
    if not isinstance(value, str):
        return value
    try:
        number = float(value.strip().removesuffix("%"))
    except ValueError:
        return value
    if not math.isfinite(number):
        return value
    if kind is int:
        return int(number) if number.is_integer() else value
    return number


def _text(value: Any, _: Mapping[str, str]) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


def _clean(value: Any, _: Mapping[str, str]) -> Any:
    if not isinstance(value, str):
        return value
    return _CONTROL.sub("", value.replace("\r\n", "\n").replace("\r", "\n")).strip()


def _truncate(limit: int, value: Any, _: Mapping[str, str]) -> Any:
    return value[:limit] if isinstance(value, str) else value


def _time(value: Any, _: Mapping[str, str]) -> Any:
    if isinstance(value, str) and (match := _RFC3339.fullmatch(value.strip())):
        moment, fraction, zone = match.groups()
        if moment.startswith("0001-01-01"):
            return None  # Go's zero time: Alertmanager's endsAt of a firing alert
        fraction = f".{fraction[:6]}" if fraction else ""
        return f"{moment.replace(' ', 'T')}{fraction}{'Z' if zone in 'Zz' else zone}"
    number = _number(float, value, {})
    if number == 0 and not isinstance(number, bool):
        return None  # Unix time 0: "not set" (Cloud Monitoring's test incident)
    if isinstance(number, int | float) and not isinstance(number, bool) and number > 0:
        try:
            seconds = number / 1000 if number > _MILLISECONDS_AFTER else number
            return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
        except (OverflowError, ValueError, OSError):  # OSError: beyond the platform's time_t
            return value
    return value


def _severity(value: Any, severities: Mapping[str, str]) -> Any:
    return severities.get(str(value).strip().lower())


_SIMPLE: dict[str, Transform] = {
    "strip_port": _strip_port,
    "lower": lambda v, _: v.lower() if isinstance(v, str) else v,
    "upper": lambda v, _: v.upper() if isinstance(v, str) else v,
    "trim": lambda v, _: v.strip() if isinstance(v, str) else v,
    "first": _first,
    "last_word": lambda v, _: v.split()[-1] if isinstance(v, str) and v.split() else v,
    "int": partial(_number, int),
    "float": partial(_number, float),
    "text": _text,
    "clean": _clean,
    "time": _time,
    "severity": _severity,
}


def transform(call: str, *, where: str) -> Transform:
    """The transform `call` names (`name` or `name(argument)`); ConfigError if there is none."""
    match = _CALL.fullmatch(call)
    name, argument = match.groups() if match else (call, None)
    if argument is None and name in _SIMPLE:
        return _SIMPLE[name]
    if name == "tag" and argument and argument.strip():
        return partial(_tag, argument.strip())
    if name == "truncate" and argument and argument.strip().isdigit():
        return partial(_truncate, int(argument))
    known = ", ".join([*_SIMPLE, "tag(name)", "truncate(n)"])
    raise ConfigError(f"{where}: unknown transform {call!r}; known: {known}")
