"""Build and run one `gcloud functions deploy` command per function of the manifest."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from deploy.manifest import Deployable, Drain, secret_mount_path

DELIMITERS = ("@", "|", ";", "#", "~", "!", "%", "+")
NO_GCLOUD = (
    "gcloud is not installed or not on PATH: install the Google Cloud CLI "
    "(https://cloud.google.com/sdk/docs/install), or add --dry-run to print the commands"
)


class GcloudMissingError(RuntimeError):
    """The gcloud CLI cannot be found."""


def runtime_env(fn: Deployable) -> dict[str, str]:
    """The plain env vars a deployed function gets (--set-env-vars)."""
    env = {"FUNCTION_USE_ASGI": "1", "WORKERS": str(fn.workers), **fn.settings_env()}
    for name, ref in fn.secrets.items():
        if ref.via == "file":
            env[f"{name}_FILE"] = secret_mount_path(name, ref)
        elif ref.via == "runtime":  # shared.secrets reads it from Secret Manager
            path = (
                ref.secret if "/" in ref.secret else f"projects/{fn.project}/secrets/{ref.secret}"
            )
            env[f"{name}_SECRET"] = f"{path}/versions/{ref.version}"
    return env


def platform_secrets(fn: Deployable) -> list[str]:
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


def trigger(fn: Deployable) -> list[str]:
    """How a function is called: HTTP for an event function, the spool's topic for the drain
    (Eventarc, retried with back-off until it answers 2xx)."""
    if not isinstance(fn, Drain):
        return ["--trigger-http"]
    assert fn.spool_topic is not None
    invoker = fn.trigger_service_account or fn.service_account
    return [
        f"--trigger-topic={fn.spool_topic.rsplit('/', 1)[1]}",
        "--retry",
        f"--trigger-service-account={invoker}",
    ]


def deploy_command(fn: Deployable, source: Path) -> list[str]:
    """The argv of `gcloud functions deploy` for fn, uploading the staged folder `source`."""
    env = runtime_env(fn)
    secrets = platform_secrets(fn)
    argv = [
        "gcloud", "functions", "deploy", fn.name, "--gen2",
        f"--runtime={fn.runtime}",
        f"--region={fn.region}",
        f"--source={source}",
        f"--entry-point={fn.entry_point}",
        *trigger(fn),
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


def require_gcloud() -> str:
    """The path of gcloud; GcloudMissingError (with the --dry-run hint) when it is missing."""
    path = shutil.which("gcloud")
    if path is None:
        raise GcloudMissingError(NO_GCLOUD)
    return path


def run(argv: list[str]) -> int:
    """Run one command, echoing it first; its exit code."""
    print(f"+ {shlex.join(argv)}", flush=True)
    return subprocess.run(argv, check=False).returncode
