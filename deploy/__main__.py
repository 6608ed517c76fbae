"""python -m deploy stage|deploy|bootstrap|smoke|topology|local|tail|openapi|docs: the functions.

    python -m deploy stage [--only NAME ...]          build/<name>/ upload folders
    python -m deploy deploy [--only NAME ...] [--dry-run]
    python -m deploy bootstrap --secret-file NAME=PATH ... [--vpc-range CIDR] [--dry-run]
    python -m deploy smoke [--only NAME ...] [--auth-file PATH] [--url URL]
    python -m deploy topology [--queue-type quorum|classic] [--dry-run]
    python -m deploy local [--port 8081] [--cluster]  what `nox -s dev` runs
    python -m deploy tail [--consume]                 print events as they arrive
    python -m deploy openapi [--out DIR]              one OpenAPI 3.1 document per function
    python -m deploy docs [--check]                   the reference tables of docs/, from the code

`topology` and `tail` reach the broker with the functions' own AMQP_* settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy import REPO, bootstrap, docs, openapi, smoke, topology
from deploy.broker import BrokerError
from deploy.gcloud import (
    GcloudMissingError,
    deploy_steps,
    drain_invoker_step,
    require_gcloud,
    spool_steps,
)
from deploy.manifest import MANIFEST, Deployment, ManifestError, load_deployment
from deploy.placeholders import placeholders
from deploy.secret_files import SecretFileError
from deploy.stage import BUILD, stage
from deploy.steps import Step, StepFailedError, print_plan, run_steps
from shared.errors import RelayError


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        deployment = _selected(load_deployment(args.manifest), args.only)
        return int(args.command(args, deployment) or 0)
    except (
        ManifestError,
        docs.DocsError,
        GcloudMissingError,
        topology.TopologyError,
        BrokerError,
        RelayError,
        FileExistsError,
        bootstrap.BootstrapError,
        SecretFileError,
        smoke.SmokeError,
        StepFailedError,
    ) as exc:  # RelayError: e.g. AMQP_URL missing
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _stage(args: argparse.Namespace, deployment: Deployment) -> None:
    for fn in deployment.deployables:
        print(f"staged {fn.name} in {stage(fn, args.build_dir)}")


def _deploy(args: argparse.Namespace, deployment: Deployment) -> None:
    steps = [
        *spool_steps(deployment),
        *deploy_steps(deployment.deployables, args.build_dir, args.manifest),
        *drain_invoker_step(deployment.drain),
    ]
    _carry_out(args, deployment, steps, [])


def _bootstrap(args: argparse.Namespace, deployment: Deployment) -> None:
    options = bootstrap.Options(
        secret_files=dict(args.secret_file),
        secrets_dir=args.secrets_dir,
        vpc_network=args.vpc_network,
        vpc_range=args.vpc_range,
        queue_type=args.queue_type,
        build_dir=args.build_dir,
        manifest=args.manifest,
        topology=args.topology,
        smoke_test=args.smoke_test,
    )
    steps = bootstrap.plan(deployment, options, whole_manifest=not args.only)
    _carry_out(args, deployment, steps, bootstrap.notes(deployment.deployables))


def _carry_out(
    args: argparse.Namespace, deployment: Deployment, steps: list[Step], notes: list[str]
) -> None:
    """Print the plan (--dry-run) or run it; the manifest's example values stop a real run."""
    examples = placeholders(deployment.deployables)
    if args.dry_run:
        for line in examples:
            print(f"warning: {args.manifest}: {line}", file=sys.stderr)
        print_plan(steps, notes=notes)
        return
    require_gcloud()
    if examples:
        raise ManifestError(f"{args.manifest}: " + "; ".join(examples) + " (nothing was run)")
    ran, skipped = run_steps(steps)
    print(f"done: {ran} steps run, {skipped} skipped (already there)")


def _smoke(args: argparse.Namespace, deployment: Deployment) -> int:
    return smoke.run(deployment.functions, url=args.url, auth_file=args.auth_file)


def _topology(args: argparse.Namespace, deployment: Deployment) -> None:
    steps = topology.plan(deployment.functions, args.queue_type)
    if args.dry_run:
        for step in steps:
            print(step)
        return
    connection = topology.connect()
    try:
        topology.apply(connection, steps)
    finally:
        connection.close()


def _local(args: argparse.Namespace, deployment: Deployment) -> None:
    from deploy.local import run_local  # imports the broker tooling (trustme) only here

    run_local(
        deployment,
        dev_dir=args.dev_dir,
        port=args.port,
        queue_type=args.queue_type,
        cluster=args.cluster,
    )


def _tail(args: argparse.Namespace, deployment: Deployment) -> None:
    from deploy.tail import tail

    connection = topology.connect()
    try:
        tail(connection, deployment.functions, consume=args.consume, out=sys.stdout)
    finally:
        connection.close()


def _openapi(args: argparse.Namespace, deployment: Deployment) -> int:
    return openapi.write(deployment.functions, args.out, args.server_url)


def _docs(args: argparse.Namespace, deployment: Deployment) -> int:
    return docs.write(args.check)


def _bootstrap_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--secret-file",
        action="append",
        type=_name_and_path,
        default=[],
        metavar="NAME=PATH",
        help="the first version of a secret (NAME: the secret or its setting, e.g. AMQP_URL)",
    )
    sub.add_argument(
        "--secrets-dir",
        type=Path,
        metavar="DIR",
        help="one file per secret, named like the secret or setting",
    )
    sub.add_argument(
        "--vpc-network", default="default", metavar="NETWORK", help="the connector's network"
    )
    sub.add_argument("--vpc-range", metavar="CIDR", help="an unused /28 for a new connector")
    sub.add_argument("--queue-type", choices=["quorum", "classic"], default="quorum")
    sub.add_argument("--build-dir", type=Path, default=BUILD)
    sub.add_argument(
        "--no-topology",
        dest="topology",
        action="store_false",
        help="the broker is not reachable from here: run `python -m deploy topology` there",
    )
    sub.add_argument(
        "--no-smoke-test",
        dest="smoke_test",
        action="store_false",
        help="send no test alert (it reaches the event's queue)",
    )
    sub.add_argument(
        "--dry-run", action="store_true", help="print the steps and their checks, run nothing"
    )


def _name_and_path(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not (sep and name and path):
        raise argparse.ArgumentTypeError(f"{text!r}: NAME=PATH (the value is read from PATH)")
    return name, Path(path)


def _selected(deployment: Deployment, only: list[str] | None) -> Deployment:
    """The functions --only names (the drain as spool_drain), or all of them."""
    if not only:
        return deployment
    unknown = sorted(set(only) - {fn.name for fn in deployment.deployables})
    if unknown:
        raise ManifestError(f"--only {', '.join(unknown)}: not in the manifest")
    drain = deployment.drain if deployment.drain and deployment.drain.name in only else None
    return Deployment([fn for fn in deployment.functions if fn.name in only], drain)


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
    sub = command("bootstrap", _bootstrap, "a first deployment, from an empty project to a 202")
    _bootstrap_arguments(sub)
    sub = command("smoke", _smoke, "one signed test alert per deployed function: 202 or fail")
    sub.add_argument(
        "--auth-file", type=Path, metavar="PATH", help="AUTH_SECRETS (default: Secret Manager)"
    )
    sub.add_argument("--url", help="the function's URL (default: gcloud functions describe)")
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
    sub = command("docs", _docs, "write the generated tables of docs/ (event types, settings)")
    sub.add_argument("--check", action="store_true", help="change nothing; fail if out of date")
    return parser


if __name__ == "__main__":
    sys.exit(main())
