"""docs/: the generated reference tables match the code, and every relative link resolves."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from deploy import REPO, docs

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_the_generated_tables_are_up_to_date() -> None:
    assert docs.stale() == [], "run python -m deploy docs"


def test_a_table_out_of_date_is_found_and_rewritten(tmp_path: Path) -> None:
    shutil.copytree(REPO / "docs", tmp_path, dirs_exist_ok=True)
    page = tmp_path / "configuration.md"
    page.write_text(page.read_text().replace("| `AMQP_HEARTBEAT` |", "| `AMQP_HEARTBEET` |"))

    assert docs.stale(tmp_path) == ["configuration.md"]
    assert docs.write(check=True, docs=tmp_path) == 1
    assert docs.write(check=False, docs=tmp_path) == 0
    assert docs.stale(tmp_path) == []
    assert page.read_text() == (REPO / "docs" / "configuration.md").read_text()


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    for target, _anchor in LINK.findall(page.read_text()):
        if not target.startswith(("http://", "https://", "mailto:")):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
