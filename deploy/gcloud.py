"""The gcloud commands of the manifest's functions: deploy (after staging), describe."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from deploy.manifest import Deployable, Deployment, Drain, secret_mount_path
from deploy.steps import Command, Step, command, deploy_cli, found

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


def deploy_steps(functions: Sequence[Deployable], build_dir: Path, manifest: Path) -> list[Step]:
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


PUBLISHER = "roles/pubsub.publisher"


def spool_steps(deployment: Deployment) -> list[Step]:
    """Before the functions: the spool's topic, and the event functions' accounts as its
    publishers (on the topic only). Nothing without a spool."""
    functions = deployment.functions
    topics = [fn.spool_topic for fn in deployment.deployables if fn.spool_topic]
    if not topics:
        return []
    _, project, _, topic = topics[0].split("/")
    where = f"--project={project}"
    describe = command(
        "gcloud", "pubsub", "topics", "describe", topic, where, "--format=value(name)"
    )
    create = command(
        "gcloud", "pubsub", "topics", "create", topic, "--labels=app=event-relay", where
    )
    steps = [Step(f"the spool's topic {topic}", (create,), found(describe, f"finds {topic}"))]
    for account in dict.fromkeys(fn.service_account for fn in functions if fn.service_account):
        grant = command(
            "gcloud", "pubsub", "topics", "add-iam-policy-binding", topic,
            f"--member=serviceAccount:{account}", f"--role={PUBLISHER}", where,
        )  # fmt: skip
        steps.append(Step(f"{account} may publish to {topic} ({PUBLISHER} on it only)", (grant,)))
    return steps


def drain_invoker_step(drain: Drain | None) -> list[Step]:
    """After the drain's deploy: Eventarc's account may invoke it (and nobody else)."""
    if drain is None:
        return []
    invoker = drain.trigger_service_account or drain.service_account
    grant = command(
        "gcloud", "functions", "add-invoker-policy-binding", drain.name,
        f"--region={drain.region}", f"--member=serviceAccount:{invoker}",
        *([f"--project={drain.project}"] if drain.project else []),
    )  # fmt: skip
    return [Step(f"{invoker} may invoke {drain.name}: Eventarc calls it as that account", (grant,))]


def url_command(fn: Deployable) -> Command:
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
