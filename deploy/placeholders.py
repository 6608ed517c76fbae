"""The example values deploy/functions.yaml ships with, which an operator must replace."""

from __future__ import annotations

from collections.abc import Iterable

from deploy.manifest import Deployable

EXAMPLE_PROJECT = "my-gcp-project"  # the project id in the repository's manifest


def placeholders(functions: Iterable[Deployable]) -> list[str]:
    """One line per manifest value that still holds the example project id."""
    found: dict[str, None] = {}  # ordered, without repeats
    for fn in functions:
        values = [
            ("project", fn.project),
            ("service_account", fn.service_account),
            ("vpc_connector", fn.vpc_connector),
            *((f"secrets.{name}.secret", ref.secret) for name, ref in fn.secrets.items()),
        ]
        for field, value in values:
            if value and EXAMPLE_PROJECT in value:
                found.setdefault(f"{field} {value}", None)
    return [f"{value} is an example value: put your own" for value in found]
