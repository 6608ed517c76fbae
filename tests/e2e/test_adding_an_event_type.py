"""README "Adding an event type", followed literally in a copy of the tree, then run end to end.

Each step of the walk-through is a code block after a `<!-- walkthrough: ACTION [PATH] -->`
line: `append` adds it to a file, `create` writes a new one, `run` runs it in the copy.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from deploy import REPO
from deploy.broker import BrokerNode
from deploy.function_process import FunctionProcess
from tests.e2e.conftest import Route, free_port, function_env

NAME, ROUTING_KEY = "certificate_expiring", "certificate.expiring"
STEP = re.compile(r"<!-- walkthrough: (append|create|run) ?(\S*) -->\n```\w*\n(.*?)```", re.DOTALL)


def steps() -> list[tuple[str, str, str]]:
    section = REPO.joinpath("README.md").read_text().split("## Adding an event type", 1)[1]
    return STEP.findall(section.split("\n## ", 1)[0])


def run(tree: Path, command: str) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command)
    if argv[0] == "python":
        argv[0] = sys.executable
    return subprocess.run(argv, cwd=tree, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tree (the files git has, as they are) with the walk-through applied."""
    copy = tmp_path_factory.mktemp("tree")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    for action, path, code in steps():
        if action == "append":
            with (copy / path).open("a") as file:
                file.write("\n\n" + code if path.endswith(".py") else code)
        elif action == "create":
            (copy / path).parent.mkdir(parents=True, exist_ok=True)
            (copy / path).write_text(code)
        else:
            done = run(copy, code.strip())
            assert done.returncode == 0, done.stdout + done.stderr
    return copy


def test_the_walkthrough_has_every_step() -> None:
    actions = [(action, path) for action, path, _ in steps()]

    assert actions == [
        ("append", "shared/schemas.py"),
        ("create", f"functions/{NAME}/main.py"),
        ("append", "deploy/functions.yaml"),
        ("create", f"tests/events/{NAME}.json"),
        ("run", ""),
    ]


def test_the_new_type_passes_the_trees_own_checks(tree: Path) -> None:
    checks = run(tree, "python -m pytest -q -p no:cacheprovider tests/unit/test_layout.py")
    docs = run(tree, "python -m deploy docs --check")
    plan = run(tree, "python -m deploy topology --dry-run")

    assert checks.returncode == 0, checks.stdout
    assert docs.returncode == 0, docs.stdout + docs.stderr
    assert f"| `{NAME}` | `{ROUTING_KEY}` |" in (tree / "docs" / "contract.md").read_text()
    assert f"queue.declare event-relay.{NAME} " in plan.stdout
    assert f"queue.bind event-relay.{NAME} <- event-relay ({ROUTING_KEY})" in plan.stdout


def test_the_new_function_relays_its_sample_to_its_queue(
    tree: Path,
    broker: BrokerNode,
    make_route: Callable[[str], Route],
    tmp_path: Path,
) -> None:
    route = make_route(ROUTING_KEY)
    env = {**function_env(broker, route.exchange), "PYTHONPATH": str(tree)}
    sample = json.loads((tree / "tests" / "events" / f"{NAME}.json").read_text())
    server = FunctionProcess(
        NAME, free_port(), env, source_dir=tree / "functions" / NAME, log_path=tmp_path / "log"
    )

    with server:
        response = httpx.post(server.url, json=sample, timeout=30)

    assert response.status_code == 202, response.text
    assert response.json()["routing_key"] == ROUTING_KEY
    [message] = route.messages()
    assert message.routing_key == ROUTING_KEY
    assert message.properties.type == f"event-relay.{NAME}"
    assert message.body["data"]["common_name"] == sample["common_name"]
    assert message.body["data"]["expires_at"] == sample["expires_at"]
