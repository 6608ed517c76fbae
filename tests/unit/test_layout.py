"""Function folders, the manifest and each main.py's declared routing key must agree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from deploy import REPO
from deploy.manifest import Function, load_manifest

FUNCTIONS = REPO / "functions"
EVENTS = REPO / "tests" / "events"
MANIFEST = {fn.name: fn for fn in load_manifest()}


def declaration(main_py: Path) -> dict[str, str]:
    """The name, routing key and target of `X = event_function("X", ..., routing_key="k")`."""
    for node in ast.walk(ast.parse(main_py.read_text())):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "event_function"
        ):
            [target] = node.targets
            assert isinstance(target, ast.Name)
            name = node.value.args[0]
            keywords = {k.arg: k.value for k in node.value.keywords}
            key = keywords["routing_key"]
            assert isinstance(name, ast.Constant)
            assert isinstance(key, ast.Constant)
            return {"target": target.id, "name": str(name.value), "routing_key": str(key.value)}
    raise AssertionError(f"{main_py} does not call event_function(...)")


def test_every_function_folder_is_in_the_manifest_and_back() -> None:
    folders = {p.parent.name for p in FUNCTIONS.glob("*/main.py")}
    sources = {fn.source_dir.name for fn in MANIFEST.values()}

    assert folders == sources, "functions/<name>/ and deploy/functions.yaml disagree"


@pytest.mark.parametrize("fn", MANIFEST.values(), ids=MANIFEST.keys())
def test_main_py_declares_what_the_manifest_says(fn: Function) -> None:
    declared = declaration(fn.source_dir / "main.py")

    assert declared["target"] == fn.entry_point, "the manifest's entry point is not defined"
    assert declared["name"] == fn.name
    assert declared["routing_key"] == fn.routing_key


@pytest.mark.parametrize("name", MANIFEST.keys())
def test_every_event_type_has_a_sample_payload(name: str) -> None:
    assert (EVENTS / f"{name}.json").is_file(), "the local run's curl example uses it"
