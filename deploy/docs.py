"""python -m deploy docs: the reference tables of docs/, generated from the code they describe.

Each table sits between `<!-- generated: NAME -->` and `<!-- end generated -->` in its page:
the event types from their models (shared/schemas.py), the settings from the settings model
(shared/config.py). `--check` changes nothing and fails when a page is out of date.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from deploy import REPO
from shared.config import SECRET_SETTINGS, Settings
from shared.schemas import EVENT_TYPES, Event

DOCS = REPO / "docs"


class DocsError(ValueError):
    """A page lacks the section a table is generated into."""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _name(name: str, info: FieldInfo) -> str:
    return f"`{name}`" + (" (required)" if info.is_required() else "")


def event_types_table() -> str:
    base = set(Event.model_fields)
    rows = ["| function | routing key | what | fields beyond the base ones |", "|---|---|---|---|"]
    for name, model in EVENT_TYPES.items():
        fields = "<br>".join(
            f"{_name(field, info)}: {_cell(info.description or '')}"
            for field, info in model.model_fields.items()
            if field not in base
        )
        what = _cell((model.__doc__ or "").strip())
        rows.append(f"| `{name}` | `{model.routing_key}` | {what} | {fields} |")
    return "\n".join(rows)


def base_fields_table() -> str:
    rows = ["| field | what |", "|---|---|"]
    for name, info in Event.model_fields.items():
        rows.append(f"| {_name(name, info)} | {_cell(info.description or '')} |")
    return "\n".join(rows)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value: Any = info.get_default(call_default_factory=True)
    if value is None or value == {}:
        return ""
    if isinstance(value, bool):
        return "`1`" if value else "off"
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def settings_table() -> str:
    rows = ["| variable | meaning | default |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        variable = f"`{name.upper()}`"
        if name in SECRET_SETTINGS:
            variable += f" (secret: or `{name.upper()}_FILE`, `{name.upper()}_SECRET`)"
        rows.append(f"| {variable} | {_cell(info.description or '')} | {_default(info)} |")
    return "\n".join(rows)


SECTIONS: dict[str, tuple[str, Callable[[], str]]] = {
    "event-types": ("contract.md", event_types_table),
    "base-fields": ("contract.md", base_fields_table),
    "settings": ("configuration.md", settings_table),
}


def _marked(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- generated: {re.escape(name)} -->\n)(.*?)(<!-- end generated -->)", re.DOTALL
    )


def _fill(match: re.Match[str], body: str) -> str:
    return f"{match[1]}{body}\n{match[3]}"


def render(page: str, docs: Path = DOCS) -> str:
    """The page with its generated tables up to date."""
    text = (docs / page).read_text()
    for name, (where, table) in SECTIONS.items():
        if where == page:
            text, found = _marked(name).subn(partial(_fill, body=table()), text)
            if not found:
                raise DocsError(f"docs/{page} has no <!-- generated: {name} --> section")
    return text


def stale(docs: Path = DOCS) -> list[str]:
    """The pages whose generated tables differ from the code."""
    pages = sorted({page for page, _ in SECTIONS.values()})
    return [page for page in pages if render(page, docs) != (docs / page).read_text()]


def write(check: bool, docs: Path = DOCS) -> int:
    """Bring the pages up to date (or, with `check`, only say which are not); exit status."""
    outdated = stale(docs)
    for page in outdated:
        if check:
            print(f"docs/{page} is out of date: run python -m deploy docs")
        else:
            (docs / page).write_text(render(page, docs))
            print(f"wrote docs/{page}")
    return 1 if check and outdated else 0
