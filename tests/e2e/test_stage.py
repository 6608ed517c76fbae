"""A staged folder is all gcloud uploads: with only its requirements in a fresh venv, it serves."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from deploy import REPO
from deploy.__main__ import main
from deploy.broker import BrokerNode
from deploy.function_process import FunctionProcess
from tests.e2e.conftest import Route, free_port, function_env, sample_event

NAME = "disk_space_low"
EVENT = sample_event(NAME)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("build")
    assert main(["stage", "--only", NAME, "--build-dir", str(build)]) == 0
    return build / NAME


@pytest.fixture(scope="module")
def fresh_python(staged: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A new venv holding only the staged requirements (pip's cache makes it quick)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(staged / "requirements.txt")],
        check=True, timeout=600, capture_output=True,
    )  # fmt: skip
    return python


def test_the_staged_folder_holds_main_shared_and_requirements(staged: Path) -> None:
    files = {str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file()}

    assert {"main.py", "requirements.txt", ".gcloudignore", "shared/function.py"} <= files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert {f for f in files if not f.startswith("shared/")} == {
        "main.py",
        "requirements.txt",
        ".gcloudignore",
    }
    assert (staged / "main.py").read_bytes() == (REPO / "functions" / NAME / "main.py").read_bytes()
    assert (staged / "requirements.txt").read_text() == (REPO / "requirements.txt").read_text()


def test_staging_again_replaces_the_folder(staged: Path) -> None:
    (staged / "stale.py").write_text("")

    assert main(["stage", "--only", NAME, "--build-dir", str(staged.parent)]) == 0
    assert not (staged / "stale.py").exists()


@pytest.fixture
def server(
    staged: Path, fresh_python: str, broker: BrokerNode, make_route: Callable[[str], Route],
    tmp_path: Path,
) -> Iterator[tuple[FunctionProcess, Route]]:  # fmt: skip
    route = make_route("disk.space-low")
    # FunctionProcess puts the repository on PYTHONPATH; only the staged folder may count here.
    env = function_env(broker, route.exchange, PYTHONPATH="")
    process = FunctionProcess(
        NAME,
        free_port(),
        env,
        source_dir=staged,
        log_path=tmp_path / "function.log",
        python=fresh_python,
    )
    with process:
        yield process, route


def test_the_staged_function_serves_from_a_fresh_venv(
    server: tuple[FunctionProcess, Route], staged: Path
) -> None:
    process, route = server

    response = httpx.post(process.url, json=EVENT, timeout=30)

    assert response.status_code == 202, response.text
    [message] = route.messages()
    assert message.body["data"]["mount_point"] == "/var/lib/postgresql"
    # Served from the staged folder, not the repository.
    assert process.process is not None
    proc = Path(f"/proc/{process.process.pid}")
    assert (proc / "cwd").resolve() == staged.resolve()
    assert b"PYTHONPATH=" in (proc / "environ").read_bytes().split(b"\0")  # empty: no repo
