"""python -m deploy stage|deploy|topology|local|tail|openapi: the manifest's functions.

    python -m deploy stage [--only NAME ...]          build/<name>/ upload folders
    python -m deploy deploy [--only NAME ...] [--dry-run]
    python -m deploy topology [--queue-type quorum|classic] [--dry-run]
    python -m deploy local [--port 8081] [--cluster]  what `nox -s dev` runs
    python -m deploy tail [--consume]                 print events as they arrive
    python -m deploy openapi [--out DIR]              one OpenAPI 3.1 document per function

`topology` and `tail` reach the broker with the functions' own AMQP_* settings.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from deploy import REPO, openapi, topology
from deploy.broker import BrokerError
from deploy.gcloud import GcloudMissingError, deploy_command, require_gcloud, run
from deploy.manifest import MANIFEST, Function, ManifestError, load_manifest
from deploy.stage import BUILD, stage
from shared.errors import RelayError


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        functions = _selected(load_manifest(args.manifest), args.only)
        return int(args.command(args, functions) or 0)
    except (
        ManifestError,
        GcloudMissingError,
        topology.TopologyError,
        BrokerError,
        RelayError,
        FileExistsError,
    ) as exc:  # RelayError: e.g. AMQP_URL missing
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _stage(args: argparse.Namespace, functions: list[Function]) -> None:
    for fn in functions:
        print(f"staged {fn.name} in {stage(fn, args.build_dir)}")


def _deploy(args: argparse.Namespace, functions: list[Function]) -> int:
    commands = [deploy_command(fn, args.build_dir / fn.name) for fn in functions]
    if args.dry_run:
        for argv in commands:
            print(shlex.join(argv))
        return 0
    require_gcloud()
    for fn, argv in zip(functions, commands, strict=True):
        stage(fn, args.build_dir)
        if code := run(argv):
            print(f"error: deploying {fn.name} failed ({code}); stopped", file=sys.stderr)
            return code
    return 0


def _topology(args: argparse.Namespace, functions: list[Function]) -> None:
    steps = topology.plan(functions, args.queue_type)
    if args.dry_run:
        for step in steps:
            print(step)
        return
    connection = topology.connect()
    try:
        topology.apply(connection, steps)
    finally:
        connection.close()


def _local(args: argparse.Namespace, functions: list[Function]) -> None:
    from deploy.local import run_local  # imports the broker tooling (trustme) only here

    run_local(
        functions,
        dev_dir=args.dev_dir,
        port=args.port,
        queue_type=args.queue_type,
        cluster=args.cluster,
    )


def _tail(args: argparse.Namespace, functions: list[Function]) -> None:
    from deploy.tail import tail

    connection = topology.connect()
    try:
        tail(connection, functions, consume=args.consume, out=sys.stdout)
    finally:
        connection.close()


def _openapi(args: argparse.Namespace, functions: list[Function]) -> int:
    return openapi.write(functions, args.out, args.server_url)


def _selected(functions: list[Function], only: list[str] | None) -> list[Function]:
    if not only:
        return functions
    unknown = sorted(set(only) - {fn.name for fn in functions})
    if unknown:
        raise ManifestError(f"--only {', '.join(unknown)}: not in the manifest")
    return [fn for fn in functions if fn.name in only]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help="default: %(default)s")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, handler: object, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(command=handler)
        sub.add_argument(
            "--only", action="append", metavar="NAME", help="only this function (repeatable)"
        )
        return sub

    sub = command("stage", _stage, "build one upload folder per function")
    sub.add_argument("--build-dir", type=Path, default=BUILD)
    sub = command("deploy", _deploy, "stage and deploy with gcloud, one function at a time")
    sub.add_argument("--build-dir", type=Path, default=BUILD)
    sub.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    for name, handler, text in (
        ("topology", _topology, "declare exchanges, queues, bindings"),
        ("local", _local, "run everything locally until Ctrl-C"),
    ):
        sub = command(name, handler, text)
        sub.add_argument("--queue-type", choices=["quorum", "classic"], default="quorum")
        if name == "topology":
            sub.add_argument("--dry-run", action="store_true", help="print the plan only")
    sub.add_argument("--port", type=int, default=8081, help="first function's port")
    sub.add_argument("--dev-dir", type=Path, default=REPO / ".dev")
    sub.add_argument(
        "--cluster", action="store_true", help="a three-node RabbitMQ cluster, not one node"
    )
    sub = command("tail", _tail, "print events as they reach the queues")
    sub.add_argument(
        "--consume",
        action="store_true",
        help="take them off the event queues (default: a private tap queue)",
    )
    sub = command("openapi", _openapi, "write one OpenAPI 3.1 document per function")
    openapi.add_arguments(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
