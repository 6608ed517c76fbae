"""Secret settings: each is given as its value (NAME) or a file path (NAME_FILE).

Placeholder for the full resolver (Secret Manager, TTL cache) that replaces it.
"""

from __future__ import annotations

import os
from pathlib import Path

from shared.errors import ConfigError, SecretUnavailableError


def read_secret(name: str) -> str | None:
    """The value of secret setting `name`, or None when it is not set at all."""
    value, path = os.environ.get(name), os.environ.get(f"{name}_FILE")
    if value is not None and path is not None:
        raise ConfigError(f"set only one of {name} and {name}_FILE")
    if path is None:
        return value
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise SecretUnavailableError(f"cannot read {name}_FILE ({path}): {exc.strerror}") from exc


def clear_cache() -> None:
    """Forget cached secrets (tests)."""
