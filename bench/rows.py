"""The rows of the table: event-relay and the designs it is measured against.

    a   event-relay: vm_isolate under functions-framework (ASGI), started as the manifest
        deploys it, with what requirements.txt installs (uvloop and httptools included)
    b   naive: a functions-framework (Flask) function opening a new TLS connection per request
    f   FastAPI under plain uvicorn, aio-pika on one robust connection, confirms, mandatory
    c   a bare functions-framework ASGI hello world answering 202 without publishing
    i   c plus importing pydantic and pika and validating with a small model: the cold-start
        floor of any pydantic + pika function (cold start only, no load)
    d   raw pika, no HTTP: one thread, one message at a time, each waiting for its confirm
    f+  f with uvloop and httptools importable (the stretch goal: a against f+)
    c+  c with uvloop and httptools importable: the same HTTP stack as a, so a/c+ is the cost
        of everything a does above answering
    x   a as served from another checkout (`--candidate DIR`): a change measured side by side
        with the code it changes, in the same rounds

uvloop and httptools are installed in the bench's environment: event-relay deploys them
(requirements.txt), so (a) uses them; the baselines run as their users would write them, so
(b), (f), (c) and (d) hide them (bench/no_speedups on PYTHONPATH), because uvicorn and
functions-framework pick them up whenever they are present. (f+) shows FastAPI with them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.servers import ServerSpec, process_env
from deploy import REPO
from deploy.broker import free_port
from deploy.function_process import FunctionProcess
from deploy.local import local_env
from deploy.manifest import Function, load_deployment, load_manifest

BENCH = REPO / "bench"
BASELINES = BENCH / "baselines"
NO_SPEEDUPS = BENCH / "no_speedups"
EVENT_FILE = BENCH / "event.json"
RELAY_FUNCTION = "vm_isolate"
RELAY_DIR = REPO / "functions" / RELAY_FUNCTION

HTTP_ROWS = ("a", "b", "f", "c")
SPOOL_ROW = "s"  # (a) with its broker down: the spool takes every message
COLD_ONLY_ROWS = ("i",)
SPEEDUP_ROWS = ("f+", "c+")
BARE_ROWS = ("c", "c+")  # hello worlds: the CPU per event of answering, and nothing else
RAW_ROW = "d"
CANDIDATE_ROW = "x"
ALL_ROWS = (*HTTP_ROWS, SPOOL_ROW, *COLD_ONLY_ROWS, RAW_ROW, *SPEEDUP_ROWS, CANDIDATE_ROW)

LABELS = {
    "a": "event-relay as deployed: ASGI function, pika AsyncioConnection",
    "s": "a with its broker down: every message spooled to Pub/Sub (the emulator, here)",
    "b": "naive: Flask function, new TLS connection per request",
    "f": "FastAPI + aio-pika (robust connection), plain uvicorn",
    "c": "functions-framework ASGI hello world, no publish",
    "i": "c + pydantic and pika imported: the import floor (cold start only)",
    "d": "raw pika, one thread, one confirmed publish at a time",
    "f+": "FastAPI + aio-pika with uvloop + httptools",
    "c+": "hello world with uvloop + httptools: (a)'s HTTP stack, no publish",
    "x": "a from the candidate checkout (--candidate)",
}


def _relay_function() -> Function:
    return next(f for f in load_manifest() if f.name == RELAY_FUNCTION)


def deployed_concurrency() -> int:
    """The concurrency per instance deploy/functions.yaml deploys vm_isolate with."""
    return _relay_function().concurrency


def deployed_connection_bound() -> int:
    """The most broker connections the manifest lets its functions open at once: the sum over
    the functions (the drain included) of max_instances times workers (one connection per
    worker process)."""
    return sum(f.max_instances * f.workers for f in load_deployment().deployables)


def deployed_env() -> dict[str, str]:
    """The environment deploy/functions.yaml deploys vm_isolate with (WORKERS, FUNCTION_USE_ASGI,
    AUTH_MODE, its env vars), as `nox -s dev` runs it: without the cloud's secret mounts."""
    return local_env(_relay_function())


def _function_command(name: str, source_dir: Path, python: str) -> tuple[str, ...]:
    """functions-framework's command line exactly as deploy.function_process builds it."""
    command = FunctionProcess(name, 0, {}, source_dir=source_dir, python=python).command()
    command[command.index("--port") + 1] = "{port}"
    return tuple(command)


def server_specs(
    broker_env: dict[str, str],
    token: str,
    *,
    python: str = sys.executable,
    candidate: Path | None = None,
    spool_env: dict[str, str] | None = None,
) -> dict[str, ServerSpec]:
    """Every HTTP row, all on the same broker, all expecting `Authorization: Bearer <token>`
    (except the hello world, which checks nothing). `candidate`: a checkout to serve as (x);
    `spool_env`: SPOOL_TOPIC and its emulator, for (s)."""

    def env(extra: dict[str, str], *, speedups: bool) -> dict[str, str]:
        path = [REPO] if speedups else [NO_SPEEDUPS, REPO]
        return process_env({**broker_env, **extra}, pythonpath=path)

    deployed = deployed_env()
    if deployed.get("AUTH_MODE") != "bearer":
        raise ValueError(f"the bench sends a bearer token; the manifest deploys {deployed}")
    relay_env = {**deployed, "AUTH_SECRETS": token}
    baseline_env = {"BENCH_TOKEN": token}
    relay = _function_command(RELAY_FUNCTION, RELAY_DIR, python)

    def hello(key: str, folder: Path, *, loaded: bool = True, speedups: bool = False) -> ServerSpec:
        """A non-publishing `hello` function in ASGI mode, as (a) is served."""
        command = _function_command("hello", folder, python)
        hello_env = env({"FUNCTION_USE_ASGI": "1"}, speedups=speedups)
        return ServerSpec(
            key,
            LABELS[key],
            command,
            hello_env,
            folder,
            publishes=False,
            loaded=loaded,
            cold_start=not speedups,
        )

    uvicorn = (
        python,
        "-m",
        "uvicorn",
        "bench.baselines.fastapi_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
    )
    specs = {
        "a": ServerSpec("a", LABELS["a"], relay, env(relay_env, speedups=True), RELAY_DIR),
        "b": ServerSpec(
            "b",
            LABELS["b"],
            _function_command("vm_isolate", BASELINES / "naive", python),
            env({**baseline_env, "FUNCTION_USE_ASGI": "0"}, speedups=False),
            BASELINES / "naive",
        ),
        "f": ServerSpec("f", LABELS["f"], uvicorn, env(baseline_env, speedups=False), REPO),
        "c": hello("c", BASELINES / "hello"),
        "i": hello("i", BASELINES / "import_floor", loaded=False),
        "c+": hello("c+", BASELINES / "hello", speedups=True),
        "f+": ServerSpec(
            "f+", LABELS["f+"], uvicorn, env(baseline_env, speedups=True), REPO, cold_start=False
        ),
    }
    if spool_env is not None:
        # (a) whose broker is down (nothing listens on its port): each request goes to the spool.
        down = {"AMQP_URL": broker_env["AMQP_URL"].rsplit(":", 1)[0] + f":{free_port()}/%2F"}
        specs["s"] = ServerSpec(
            "s",
            LABELS["s"],
            relay,
            env({**relay_env, **spool_env, **down}, speedups=True),
            RELAY_DIR,
            cold_start=False,
            spooled=True,
        )
    if candidate is not None:
        # The same environment as (a), its code from the other checkout.
        source = candidate / "functions" / RELAY_FUNCTION
        specs["x"] = ServerSpec(
            "x",
            f"{LABELS['a']}, from {candidate}",
            _function_command(RELAY_FUNCTION, source, python),
            process_env({**broker_env, **relay_env}, pythonpath=[candidate]),
            source,
        )
    return specs


def compile_sources(python: str, candidate: Path | None = None) -> None:
    """Byte-compile what a deployment holds compiled: the rows' own code, as the
    functions-framework buildpack does (`python3 -m compileall -f -q .`), and the installed
    packages, as pip does when the buildpack installs them. uv installs none compiled, and a
    machine that writes no bytecode (PYTHONDONTWRITEBYTECODE) would then compile pydantic,
    Starlette, pika and the rest at every cold start: two thirds of a start here, which no
    deployed instance spends. Compiled once; later runs find them up to date."""
    packages = subprocess.run(
        [python, "-c", "import site; print(*site.getsitepackages(), sep='\\n')"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    roots = [REPO / "shared", REPO / "functions", BASELINES, *map(Path, packages)]
    if candidate is not None:
        roots += [candidate / "shared", candidate / "functions"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(
        [python, "-m", "compileall", "-q", "-j", "0", *map(str, roots)],
        env=env,
        check=True,
        timeout=600,
    )


def raw_command(python: str, seconds: float, max_messages: int) -> list[str]:
    return [
        python,
        "-m",
        "bench.baselines.raw_pika",
        str(EVENT_FILE),
        str(seconds),
        str(max_messages),
    ]


def raw_env(broker_env: dict[str, str]) -> dict[str, str]:
    return process_env(broker_env, pythonpath=[NO_SPEEDUPS, REPO])
