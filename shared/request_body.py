"""Reading a request safely: bounded body, JSON content type, strict JSON, schema validation."""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypeVar

from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from shared.errors import (
    MalformedJsonError,
    PayloadTooLargeError,
    RequestError,
    UnsupportedMediaTypeError,
    ValidationFailedError,
)
from shared.schemas import Event

MAX_DEPTH = 32
MAX_NUMBER_CHARS = 40
E = TypeVar("E", bound=Event)
_JSON_MEDIA_TYPE = re.compile(r"^application/(?:[a-z0-9.+-]+\+)?json$")


async def read_body(declared_length: str | None, receive: Receive, limit: int) -> bytes:
    """The whole body, refusing more than `limit` bytes whether or not Content-Length says so.

    Read from the ASGI messages themselves: Starlette's request.stream() wraps the same loop in
    an async generator, whose steps cost more than the loop (a body is one message, mostly).
    """
    if declared_length is not None:
        if not declared_length.isdigit():
            raise RequestError("Content-Length is not a number.")
        if int(declared_length) > limit:
            raise PayloadTooLargeError(f"The body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect, as request.stream() raises it
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"The body is larger than {limit} bytes.")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)  # linear in the size however small the chunks; one is returned as is


def check_json_content_type(content_type: str | None) -> None:
    """Accept application/json (or a +json type), in UTF-8 when a charset is given."""
    if content_type == "application/json":  # what nearly every sender sends
        return
    media_type, *params = (content_type or "").split(";")
    if not _JSON_MEDIA_TYPE.match(media_type.strip().lower()):
        raise UnsupportedMediaTypeError("Send the event as application/json.")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            raise UnsupportedMediaTypeError("JSON must be encoded as UTF-8.")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Parse strict JSON: UTF-8, an object, no duplicate keys, NaN, huge numbers or deep nesting."""
    try:
        document = _STRICT.decode(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise MalformedJsonError("The body is not valid UTF-8.") from None
    except json.JSONDecodeError as exc:
        raise MalformedJsonError(
            f"The body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from None
    except RecursionError:
        raise MalformedJsonError(f"JSON nesting is deeper than {MAX_DEPTH} levels.") from None
    except ValueError as exc:  # raised by the hooks below with a message for the caller
        raise MalformedJsonError(str(exc)) from None
    if not isinstance(document, dict):
        raise MalformedJsonError("The body must be a JSON object.")
    # Nesting deeper than MAX_DEPTH needs more brackets than that: most bodies skip the walk.
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and _depth(document) > MAX_DEPTH:
        raise MalformedJsonError(f"JSON nesting is deeper than {MAX_DEPTH} levels.")
    return document


def validate_event(model: type[E], body: bytes) -> E:
    """Validate strict JSON against `model`: a 422 says where and what, never echoes the input."""
    try:
        return model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise ValidationFailedError(
            f"The event does not match the {model.__name__} schema.",
            errors=validation_errors(exc),
        ) from None


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as problem+json entries: a JSON pointer, the error type and a message."""
    return [
        {
            "pointer": "/" + "/".join(str(part) for part in error["loc"]),
            "type": error["type"],
            "detail": error["msg"],
        }
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"Duplicate key {key[:64]!r} in a JSON object.")
            seen.add(key)
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number.")


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"A number is longer than {MAX_NUMBER_CHARS} characters.")
    return int(text)


def _bounded_float(text: str) -> float:
    value = float(text) if len(text) <= MAX_NUMBER_CHARS else math.inf
    if not math.isfinite(value):
        raise ValueError("A number is too large.")
    return value


def _depth(document: Any) -> int:
    """How many objects and arrays nest inside each other, walked without recursion."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


# Built once: json.loads with hooks makes a new decoder (and its scanner) on every call.
_STRICT = json.JSONDecoder(
    object_pairs_hook=_object_without_duplicates,
    parse_constant=_reject_constant,
    parse_int=_bounded_int,
    parse_float=_bounded_float,
)
