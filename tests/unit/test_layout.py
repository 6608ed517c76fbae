"""Every function folder is deployed by the manifest, and every event type has a sample."""

from __future__ import annotations

import pytest

from deploy import REPO
from deploy.manifest import load_deployment, load_manifest

FUNCTIONS = REPO / "functions"
EVENTS = REPO / "tests" / "events"
MANIFEST = {fn.name: fn for fn in load_manifest()}


def test_every_function_folder_is_in_the_manifest_and_back() -> None:
    folders = {p.parent.name for p in FUNCTIONS.glob("*/main.py")}
    sources = {fn.source_dir.name for fn in load_deployment().deployables}

    assert folders == sources, "functions/<name>/ and deploy/functions.yaml disagree"


@pytest.mark.parametrize("name", MANIFEST.keys())
def test_every_event_type_has_a_sample_payload(name: str) -> None:
    assert (EVENTS / f"{name}.json").is_file(), "the local run's curl example uses it"
