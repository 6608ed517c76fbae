"""`python -m deploy bootstrap`: a first deployment, from an empty project to a 202, in order.

1. enable the APIs; 2. create each service account; 3. per secret: create it, add its first
version from the operator's file, let the accounts of the functions that read it access it (on
the secret, never project-wide); 4. the VPC connector the manifest names; 5. the spool's topic,
and its publishers; 6. the topology on the broker; 7. stage and deploy each function (the drain
too), and let Eventarc invoke the drain; 8. one signed test alert per function, which must
answer 202.

Each step that makes something first runs a read-only check (`gcloud ... describe` or `list`),
so a second run skips what exists; the topology (idempotent itself) and the smoke test always
run. Secret values come from files only: the commands name the file, never the value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploy.gcloud import deploy_steps, drain_invoker_step, spool_steps, url_command
from deploy.manifest import MANIFEST, Deployable, Deployment, Function
from deploy.secret_files import Secret, collect_secrets, file_of
from deploy.steps import Check, Step, command, deploy_cli, found, lines

ACCESSOR = "roles/secretmanager.secretAccessor"
APIS = (
    "cloudfunctions.googleapis.com",
    "run.googleapis.com",
    "cloudbuild.googleapis.com",
    "artifactregistry.googleapis.com",
    "logging.googleapis.com",
    "iam.googleapis.com",  # service accounts
    "secretmanager.googleapis.com",
)
VPC_APIS = ("vpcaccess.googleapis.com", "compute.googleapis.com")  # the connector, its network
SPOOL_APIS = ("pubsub.googleapis.com", "eventarc.googleapis.com")  # the topic, the drain's trigger
AMQP_SECRETS = ("AMQP_URL", "AMQP_CA_CERT", "AMQP_CLIENT_CERT", "AMQP_CLIENT_KEY")
# What the person (or CI identity) running bootstrap needs; the functions' account gets none of it.
OPERATOR_ROLES = (
    "roles/serviceusage.serviceUsageAdmin (enable the APIs)",
    "roles/iam.serviceAccountAdmin (create the service account)",
    "roles/secretmanager.admin (create the secrets, add versions, grant access to them)",
    "roles/vpcaccess.admin and roles/compute.networkViewer (the VPC connector)",
    "roles/cloudfunctions.admin (deploy; --allow-unauthenticated sets the service's IAM policy)",
    "roles/iam.serviceAccountUser on the functions' service account (deploy as it)",
    "roles/pubsub.admin (the spool's topic and who may publish to it)",
)


class BootstrapError(ValueError):
    """The manifest cannot make a plan (a function without a project, a connector's name)."""


@dataclass(frozen=True)
class Options:
    """What the operator gives bootstrap besides the manifest."""

    secret_files: Mapping[str, Path] = field(default_factory=dict)  # by secret or setting
    secrets_dir: Path | None = None  # one file per secret, named like the secret or setting
    vpc_network: str = "default"
    vpc_range: str | None = None
    queue_type: str = "quorum"
    build_dir: Path = Path("build")
    manifest: Path = MANIFEST
    topology: bool = True
    smoke_test: bool = True


def plan(deployment: Deployment, options: Options, *, whole_manifest: bool) -> list[Step]:
    """Every step of a first deployment (of the whole manifest, or a selection: then the
    topology is declared for those functions only)."""
    functions, drain = deployment.functions, deployment.drain
    every = deployment.deployables
    for fn in every:
        if not fn.project:
            raise BootstrapError(f"functions.{fn.name}.project: bootstrap needs the project")
    secrets = collect_secrets(every, options.secret_files, options.secrets_dir)
    steps = _api_steps(every, spool=drain is not None)
    invokers = [drain.trigger_service_account] if drain else []
    steps += [_account_step(e) for e in _unique([*(fn.service_account for fn in every), *invokers])]
    for secret in secrets:
        steps += _secret_steps(secret)
    steps += [_connector_step(c, options) for c in _unique_connectors(every)]
    steps += spool_steps(deployment)
    if options.topology and functions:
        steps += _topology_steps(functions, secrets, options, whole_manifest)
    deploys = deploy_steps(every, options.build_dir, options.manifest)
    steps += [
        Step(step.title, step.commands, found(url_command(fn), f"finds {fn.name} deployed"))
        for fn, step in zip(every, deploys, strict=True)
    ]
    steps += drain_invoker_step(drain)
    if options.smoke_test:
        steps += [_smoke_step(fn, secrets, options) for fn in functions]
    return steps


def notes(functions: Sequence[Deployable]) -> list[str]:
    """Comment lines heading the plan: what it deploys and what the operator needs."""
    names = ", ".join(fn.name for fn in functions)
    projects = ", ".join(_unique(fn.project for fn in functions))
    text = [f"event-relay first deployment of {names} in {projects}", "the operator needs:"]
    text += [f"  {role}" for role in OPERATOR_ROLES]
    for fn in functions:
        for setting, ref in fn.secrets.items():
            if ref.version not in ("latest", "1"):
                text.append(
                    f"note: functions.{fn.name}.secrets.{setting} pins version {ref.version} of "
                    f"{ref.secret}; a secret created now starts at version 1"
                )
    return text


def _api_steps(functions: Sequence[Deployable], *, spool: bool) -> list[Step]:
    steps = []
    for project in _unique(fn.project for fn in functions):
        here = [fn for fn in functions if fn.project == project]
        apis = [
            *APIS,
            *(VPC_APIS if any(fn.vpc_connector for fn in here) else ()),
            *(SPOOL_APIS if spool else ()),
        ]
        listed = command(
            "gcloud", "services", "list", "--enabled", f"--project={project}",
            "--format=value(config.name)",
        )  # fmt: skip
        enabled = Check(listed, _lists_all(apis), "lists all of them")
        enable = command("gcloud", "services", "enable", *apis, f"--project={project}")
        steps.append(Step(f"enable the APIs in {project}", (enable,), enabled))
    return steps


def _account_step(email: str) -> Step:
    account, _, domain = email.partition("@")
    project = domain.removesuffix(".iam.gserviceaccount.com")
    describe = command(
        "gcloud", "iam", "service-accounts", "describe", email, f"--project={project}",
        "--format=value(email)",
    )  # fmt: skip
    create = command(
        "gcloud", "iam", "service-accounts", "create", account,
        "--display-name=event-relay functions", f"--project={project}",
    )  # fmt: skip
    title = f"the functions' service account {email} (no project roles: access per secret below)"
    return Step(title, (create,), found(describe, "finds it"))


def _secret_steps(secret: Secret) -> list[Step]:
    name, project = secret.name, f"--project={secret.project}"
    listed = command("gcloud", "secrets", "list", project, "--format=value(name)")
    create = command(
        "gcloud", "secrets", "create", name, "--replication-policy=automatic",
        "--labels=app=event-relay", project,
    )  # fmt: skip
    versions = command(
        "gcloud", "secrets", "versions", "list", name, project, "--format=value(name,state)"
    )
    data = str(secret.file) if secret.file else "PATH"
    add = command("gcloud", "secrets", "versions", "add", name, f"--data-file={data}", project)
    missing = None
    if secret.file is None:
        missing = f"no file for {name}: add --secret-file {secret.key}=PATH (or --secrets-dir)"
    policy = command("gcloud", "secrets", "get-iam-policy", name, project, "--format=json")
    steps = [
        Step(
            f"the secret {name} (read as {' and '.join(secret.settings)})",
            (create,),
            Check(listed, lambda out: name in {_basename(x) for x in lines(out)}, f"lists {name}"),
        ),
        Step(
            f"the first version of {name}, from {secret.file or 'a file of yours'}",
            (add,),
            Check(versions, _has_enabled_version, "shows an enabled version"),
            blocked=missing,
        ),
    ]
    for reader in secret.readers:
        member = f"serviceAccount:{reader}"
        grant = command(
            "gcloud", "secrets", "add-iam-policy-binding", name, f"--member={member}",
            f"--role={ACCESSOR}", "--condition=None", project,
        )  # fmt: skip
        bound = Check(policy, _grants(member), f"grants {ACCESSOR} to {member}")
        steps.append(Step(f"{reader} may read {name} ({ACCESSOR} on it only)", (grant,), bound))
    return steps


def _basename(resource: str) -> str:
    return resource.rsplit("/", 1)[-1]


def _has_enabled_version(out: str) -> bool:
    return any(line.split()[-1].lower() == "enabled" for line in lines(out))


def _lists_all(apis: Sequence[str]) -> Callable[[str], bool]:
    return lambda out: set(apis) <= set(lines(out))


def _grants(member: str) -> Callable[[str], bool]:
    """Whether an IAM policy (gcloud's --format=json) grants ACCESSOR to member, unconditionally."""

    def granted(policy_json: str) -> bool:
        try:
            policy = json.loads(policy_json or "{}")
        except ValueError:
            return False
        return any(
            b.get("role") == ACCESSOR and member in b.get("members", []) and not b.get("condition")
            for b in policy.get("bindings", [])
        )

    return granted


@dataclass(frozen=True)
class Connector:
    project: str
    region: str
    name: str


def _unique_connectors(functions: Sequence[Deployable]) -> list[Connector]:
    """The distinct connectors: projects/P/locations/R/connectors/N, or N in fn's project."""
    found: dict[Connector, None] = {}
    for fn in functions:
        path = fn.vpc_connector
        if not path:
            continue
        parts = path.split("/")
        if len(parts) == 6 and parts[0] == "projects" and parts[2] == "locations":
            found.setdefault(Connector(parts[1], parts[3], parts[5]), None)
        elif "/" in path:
            raise BootstrapError(
                f"functions.{fn.name}.vpc_connector: {path}: give a name or "
                "projects/P/locations/R/connectors/NAME"
            )
        else:
            found.setdefault(Connector(fn.project or "", fn.region or "", path), None)
    return list(found)


def _connector_step(c: Connector, options: Options) -> Step:
    where = (f"--region={c.region}", f"--project={c.project}")
    group = ("gcloud", "compute", "networks", "vpc-access", "connectors")
    describe = command(*group, "describe", c.name, *where, "--format=value(name)")
    create = command(
        *group, "create", c.name, *where,
        f"--network={options.vpc_network}", f"--range={options.vpc_range or 'CIDR'}",
    )  # fmt: skip
    blocked = None
    if not options.vpc_range:
        blocked = (
            f"no --vpc-range: give an unused /28 of network {options.vpc_network} that does not "
            "overlap the on-prem ranges (e.g. --vpc-range 10.8.0.0/28), or create it yourself"
        )
    title = f"the VPC connector {c.name} in {c.region}, the way to the on-prem broker"
    return Step(title, (create,), found(describe, "finds it"), blocked=blocked)


def _topology_steps(
    functions: Sequence[Function],
    secrets: Sequence[Secret],
    options: Options,
    whole_manifest: bool,
) -> list[Step]:
    """`python -m deploy topology` with the AMQP settings the functions will read, from the
    operator's files where given (else from this shell's AMQP_*); one step per distinct set."""
    groups: dict[tuple[tuple[str, str], ...], list[Function]] = {}
    for fn in functions:
        env = tuple(
            (f"{setting}_FILE", str(file))
            for setting in AMQP_SECRETS
            if (file := file_of(fn, setting, secrets))
        )
        groups.setdefault(env, []).append(fn)
    steps = []
    for env, group in groups.items():
        everything = whole_manifest and len(groups) == 1
        only = [] if everything else [arg for fn in group for arg in ("--only", fn.name)]
        topology = command(
            *deploy_cli(options.manifest), "topology", f"--queue-type={options.queue_type}", *only,
            env=dict(env),
        )  # fmt: skip
        source = "the files given" if env else "this shell's AMQP_* settings"
        title = (
            f"the broker side: exchanges, queues and bindings, reaching the broker with {source}"
            " (idempotent; --no-topology when the broker is not reachable from here)"
        )
        steps.append(Step(title, (topology,)))
    return steps


def _smoke_step(fn: Function, secrets: Sequence[Secret], options: Options) -> Step:
    file = file_of(fn, "AUTH_SECRETS", secrets)
    smoke = command(
        *deploy_cli(options.manifest), "smoke", "--only", fn.name,
        *(["--auth-file", str(file)] if file else []),
    )  # fmt: skip
    mode = fn.auth.mode if fn.auth else "bearer"
    source = "" if file else " (AUTH_SECRETS read back from Secret Manager)"
    title = f"smoke test: one {mode} test alert to {fn.name}, which must answer 202{source}"
    return Step(title, (smoke,))


def _unique(values: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))
