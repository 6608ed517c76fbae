"""The gcloud commands of the manifest's functions: deploy (after staging), describe."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from deploy.manifest import Function, secret_mount_path
from deploy.steps import Command, Step, command, deploy_cli

DELIMITERS = ("@", "|", ";", "#", "~", "!", "%", "+")
NO_GCLOUD = (
    "gcloud is not installed or not on PATH: install the Google Cloud CLI "
    "(https://cloud.google.com/sdk/docs/install), or add --dry-run to print the commands"
)


class GcloudMissingError(RuntimeError):
    """The gcloud CLI cannot be found."""


def runtime_env(fn: Function) -> dict[str, str]:
    """The plain env vars a deployed function gets (--set-env-vars)."""
    env = {"FUNCTION_USE_ASGI": "1", "WORKERS": str(fn.workers)}  # ASGI mode, always
    if fn.auth is not None:
        env["AUTH_MODE"] = fn.auth.mode
        if fn.auth.tolerance_seconds is not None:
            env["AUTH_TOLERANCE_SECONDS"] = str(fn.auth.tolerance_seconds)
        if fn.auth.timestamp_header is not None:
            env["AUTH_TIMESTAMP_HEADER"] = fn.auth.timestamp_header
    env.update(sender_env(fn))
    env.update(fn.env)
    for name, ref in fn.secrets.items():
        if ref.via == "file":
            env[f"{name}_FILE"] = secret_mount_path(name, ref)
        elif ref.via == "runtime":  # shared.secrets reads it from Secret Manager
            path = (
                ref.secret if "/" in ref.secret else f"projects/{fn.project}/secrets/{ref.secret}"
            )
            env[f"{name}_SECRET"] = f"{path}/versions/{ref.version}"
    return env


def sender_env(fn: Function) -> dict[str, str]:
    """The SENDER* settings of `senders` (shared/adapters/routes.py), only where not default."""
    senders, env = fn.senders, {}
    if senders.paths is not None:
        env["SENDERS"] = ",".join(senders.paths)
    if senders.default != "canonical":
        env["SENDER_DEFAULT"] = senders.default
    if senders.forward_resolved:
        env["SENDER_FORWARD_RESOLVED"] = "1"
    if senders.mappings:
        env["SENDER_MAPPINGS"] = json.dumps(senders.mappings, separators=(",", ":"))
    return env


def platform_secrets(fn: Function) -> list[str]:
    """--set-secrets items: env vars and mounted files the platform fills from Secret Manager."""
    items = []
    for name, ref in fn.secrets.items():
        if ref.via == "env":
            items.append(f"{name}={ref.secret}:{ref.version}")
        elif ref.via == "file":
            items.append(f"{secret_mount_path(name, ref)}={ref.secret}:{ref.version}")
    return items


def gcloud_list(items: Iterable[str]) -> str:
    """A gcloud list/dict argument; `^D^` picks another delimiter when a value holds a comma
    (see `gcloud topic escaping`)."""
    items = list(items)
    text = ",".join(items)
    if not any("," in item for item in items) and not text.startswith("^"):
        return text
    for delimiter in DELIMITERS:
        if not any(delimiter in item for item in items):
            return f"^{delimiter}^{delimiter.join(items)}"
    raise ValueError(f"no delimiter among {DELIMITERS} is free in {items!r}")


def deploy_command(fn: Function, source: Path) -> list[str]:
    """The argv of `gcloud functions deploy` for fn, uploading the staged folder `source`."""
    env = runtime_env(fn)
    secrets = platform_secrets(fn)
    argv = [
        "gcloud", "functions", "deploy", fn.name, "--gen2",
        f"--runtime={fn.runtime}",
        f"--region={fn.region}",
        f"--source={source}",
        f"--entry-point={fn.entry_point}",
        "--trigger-http",
        f"--set-env-vars={gcloud_list(f'{k}={v}' for k, v in env.items())}",
        # --clear-*: a deploy states the whole configuration; an omitted flag would keep
        # whatever an earlier deploy set.
        f"--set-secrets={gcloud_list(secrets)}" if secrets else "--clear-secrets",
        f"--min-instances={fn.min_instances}",
        f"--max-instances={fn.max_instances}",
        f"--concurrency={fn.concurrency}",
        *([f"--cpu={fn.cpu:g}"] if fn.cpu is not None else []),
        f"--memory={fn.memory}",
        f"--timeout={fn.timeout}s",
    ]  # fmt: skip
    if fn.vpc_connector:
        argv.append(f"--vpc-connector={fn.vpc_connector}")
        argv.append(f"--egress-settings={fn.egress or 'private-ranges-only'}")
    else:
        argv.append("--clear-vpc-connector")
    argv.append(f"--ingress-settings={fn.ingress}")
    argv.append(
        "--allow-unauthenticated" if fn.allow_unauthenticated else "--no-allow-unauthenticated"
    )
    argv.append(f"--service-account={fn.service_account}")
    if fn.project:
        argv.append(f"--project={fn.project}")
    return argv


def deploy_steps(functions: Sequence[Function], build_dir: Path, manifest: Path) -> list[Step]:
    """Per function: stage its upload folder (`python -m deploy stage`), then deploy it."""
    build = build_dir.resolve()
    steps = []
    for fn in functions:
        stage = command(
            *deploy_cli(manifest), "stage", "--only", fn.name, "--build-dir", str(build)
        )
        deploy = Command(tuple(deploy_command(fn, build / fn.name)))
        if (build / fn.name).exists():
            state = "staged earlier: the stage command rebuilds it"
        else:
            state = "not there yet: the stage command makes it"
        title = f"stage {fn.name} into {build / fn.name} ({state}), then deploy it"
        steps.append(Step(title, (stage, deploy)))
    return steps


def url_command(fn: Function) -> Command:
    """`gcloud functions describe` printing the deployed function's URL (empty: not there)."""
    return command(
        "gcloud", "functions", "describe", fn.name, "--gen2", f"--region={fn.region}",
        *([f"--project={fn.project}"] if fn.project else []),
        "--format=value(serviceConfig.uri)",
    )  # fmt: skip


def require_gcloud() -> str:
    """The path of gcloud; GcloudMissingError (with the --dry-run hint) when it is missing."""
    path = shutil.which("gcloud")
    if path is None:
        raise GcloudMissingError(NO_GCLOUD)
    return path
