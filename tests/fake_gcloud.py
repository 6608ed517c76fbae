"""A stand-in `gcloud` for bootstrap's order and idempotence: a project kept in a JSON file.

It knows only the commands bootstrap and smoke run, answers the read-only ones (describe, list,
get-iam-policy, versions access) from the project's state, applies the others to it, and logs
every call (one JSON argv per line). Whether a command is well-formed is not its business: the
real gcloud's parser checks that (tests/unit/test_gcloud_parser.py).

    bin_dir = install(tmp_path, state={...})   # then put bin_dir first on PATH
    calls(tmp_path)                            # every argv it was called with
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

STATE = "FAKE_GCLOUD_STATE"  # the project's JSON file
LOG = "FAKE_GCLOUD_LOG"  # one JSON argv per line
URL = "FAKE_GCLOUD_URL"  # what a deployed function's URL is (default: a made-up run.app one)
EMPTY: dict[str, Any] = {
    "services": [],
    "accounts": [],
    "secrets": {},
    "connectors": [],
    "functions": {},
}
MUTATING = {"enable", "create", "add", "add-iam-policy-binding", "deploy"}


def install(
    folder: Path, state: dict[str, Any] | None = None, url: str | None = None
) -> dict[str, str]:
    """Make `gcloud` in folder/bin; the environment variables that put it first on PATH."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "gcloud"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -S {Path(__file__).resolve()} "$@"\n')
    script.chmod(0o755)
    (folder / "state.json").write_text(json.dumps({**EMPTY, **(state or {})}))
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        STATE: str(folder / "state.json"),
        LOG: str(folder / "calls.jsonl"),
    }
    if url:
        env[URL] = url
    return env


def calls(folder: Path) -> list[list[str]]:
    log = folder / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def state(folder: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((folder / "state.json").read_text())
    return loaded


def mutations(folder: Path) -> list[str]:
    """The calls that changed something, as "group verb name": "secrets create amqp-url"."""
    done = []
    for argv in calls(folder):
        words = [w for w in argv if not w.startswith("-")]
        verb = next((w for w in words if w in MUTATING), None)
        if verb:
            done.append(" ".join(words[: words.index(verb) + 2]))
    return done


def main(argv: list[str]) -> int:
    with open(os.environ[LOG], "a") as log:
        log.write(json.dumps(argv) + "\n")
    words = [w for w in argv if not w.startswith("--")]
    flags = dict(w[2:].partition("=")[::2] for w in argv if w.startswith("--"))
    path = Path(os.environ[STATE])
    project = json.loads(path.read_text())
    code = answer(words, flags, project)
    path.write_text(json.dumps(project))
    return code


def answer(words: list[str], flags: dict[str, str], p: dict[str, Any]) -> int:
    secrets = p["secrets"]
    match words:
        case ["services", "list"]:
            print("\n".join(p["services"]))
        case ["services", "enable", *apis]:
            p["services"] += [api for api in apis if api not in p["services"]]
        case ["iam", "service-accounts", "describe", email]:
            return found(email in p["accounts"], email)
        case ["iam", "service-accounts", "create", account]:
            p["accounts"].append(f"{account}@{flags['project']}.iam.gserviceaccount.com")
        case ["secrets", "list"]:
            print("\n".join(f"projects/123456/secrets/{name}" for name in secrets))
        case ["secrets", "create", name]:
            if name in secrets:
                return fail("ALREADY_EXISTS")
            secrets[name] = {"versions": [], "members": []}
        case ["secrets", "versions", "list", name]:
            if name not in secrets:
                return fail("NOT_FOUND")
            print("\n".join(f"{n}\tenabled" for n, _ in enumerate(secrets[name]["versions"], 1)))
        case ["secrets", "versions", "add", name]:
            secrets[name]["versions"].append(Path(flags["data-file"]).read_text())
        case ["secrets", "versions", "access", _]:
            print(secrets[flags["secret"]]["versions"][-1], end="")
        case ["secrets", "get-iam-policy", name]:
            members = secrets[name]["members"] if name in secrets else []
            role = "roles/secretmanager.secretAccessor"
            print(json.dumps({"bindings": [{"role": role, "members": members}] if members else []}))
        case ["secrets", "add-iam-policy-binding", name]:
            secrets[name]["members"].append(flags["member"])
        case ["compute", "networks", "vpc-access", "connectors", "describe", name]:
            return found(name in p["connectors"], name)
        case ["compute", "networks", "vpc-access", "connectors", "create", name]:
            p["connectors"].append(name)
        case ["functions", "describe", name]:
            return found(name in p["functions"], p["functions"].get(name, ""))
        case ["functions", "deploy", name]:
            url = os.environ.get(URL, f"https://{name.replace('_', '-')}-fake.a.run.app")
            p["functions"][name] = url
        case _:
            return fail(f"fake gcloud: no such command {' '.join(words)}")
    return 0


def found(exists: bool, output: str) -> int:
    if exists:
        print(output)
        return 0
    return fail("NOT_FOUND")


def fail(message: str) -> int:
    print(f"ERROR: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
