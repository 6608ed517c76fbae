"""deploy/functions.yaml: what each function is and how it is deployed, validated by pydantic.

`defaults` hold the settings every function shares; each entry under `functions` may override
any of them. `env` and `secrets` merge key by key; every other field is replaced whole. Errors
name the file, the entry and the field: `deploy/functions.yaml: functions.vm_isolate.memory: ...`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from deploy import REPO
from shared.adapters.mapping import parse_expression
from shared.config import LOCAL_ONLY, SECRET_SETTINGS, Settings, settings_env
from shared.errors import ConfigError
from shared.routes import Routes
from shared.schemas import EVENT_TYPES, Event
from shared.vocabulary import CANONICAL, DRAIN, AuthMode, SenderName

MANIFEST = REPO / "deploy" / "functions.yaml"
# Every event function reads every secret setting (shared.broker_params, shared.auth); the
# drain only the broker's.
REQUIRED_SECRETS = tuple(name.upper() for name in SECRET_SETTINGS)
BROKER_SECRETS = tuple(name for name in REQUIRED_SECRETS if name.startswith("AMQP_"))
# Env names the manifest's `env` must not set, besides those its blocks set (`auth`, `senders`,
# `project`) and the local-development switches: functions-framework's and the platform's
# (FUNCTION_USE_ASGI and WORKERS are deploy's; THREADS is ignored in ASGI mode), and DEBUG,
# which switches functions-framework to Werkzeug's debugger.
FRAMEWORK_ENV = re.compile(
    r"FUNCTION_[A-Z_]+|WORKERS|THREADS|DEBUG|HOST|PORT|K_[A-Z_]+|X_GOOGLE_[A-Z0-9_]*"
)


class ManifestError(ValueError):
    """The manifest cannot be read or is invalid; the message names the entry and field."""


def _seconds(value: Any) -> Any:
    """gcloud's `60s` form, or a bare number of seconds."""
    if isinstance(value, str) and re.fullmatch(r"\d+s", value.strip()):
        return int(value.strip()[:-1])
    return value


def _cloud_run_cpu(cpu: float | None) -> float | None:
    """Cloud Run takes a fraction below 1, or 1, 2, 4, 6 or 8 vCPU."""
    if cpu is not None and cpu >= 1 and cpu not in (1, 2, 4, 6, 8):
        raise ValueError("Cloud Run allows a fraction below 1, or 1, 2, 4, 6 or 8")
    return cpu


def _not_reserved_queue(name: str) -> str:
    if name.startswith("amq."):
        raise ValueError("names starting with amq. are reserved by the broker")
    return name


EnvName = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,99}$")]
FunctionName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,48}$")]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")]
QueueName = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,255}$"), AfterValidator(_not_reserved_queue)
]
TopicId = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")]
Memory = Annotated[str, Field(pattern=r"^[1-9][0-9]*(k|M|G|Ki|Mi|Gi)$")]
Timeout = Annotated[int, BeforeValidator(_seconds), Field(ge=1, le=3600)]
Email = Annotated[str, Field(pattern=r"^[a-z0-9-]+@[a-z0-9-]+\.iam\.gserviceaccount\.com$")]
SecretName = Annotated[
    str, Field(pattern=r"^([A-Za-z0-9_-]{1,255}|projects/[^/\s]+/secrets/[A-Za-z0-9_-]{1,255})$")
]
SecretVersion = Annotated[str, Field(pattern=r"^(latest|[1-9][0-9]*)$")]
MountPath = Annotated[str, Field(pattern=r"^/[A-Za-z0-9_./-]+/[A-Za-z0-9_.-]+$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class SecretRef(_Model):
    """Where a secret setting comes from and who reads it (see README "Secrets")."""

    secret: SecretName
    version: SecretVersion = "latest"
    # file: the platform mounts it (NAME_FILE); env: the platform injects it at instance start
    # (NAME); runtime: our code reads Secret Manager (NAME_SECRET).
    via: Literal["file", "env", "runtime"] = "file"
    path: MountPath | None = None  # file only; default /secrets/<name>/value


class Auth(_Model):
    """AUTH_MODE and its options; the credentials are the AUTH_SECRETS secret."""

    mode: AuthMode
    tolerance_seconds: Annotated[int | None, Field(ge=1, le=3600)] = None
    timestamp_header: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9-]{1,100}$")] = None


class Senders(_Model):
    """The sender payloads a function accepts (README "Senders"): SENDER_* env vars."""

    paths: list[SenderName] | None = None  # POST <url>/<sender>; default: every sender
    default: Literal["canonical"] | SenderName = CANONICAL  # the format of a plain POST <url>
    forward_resolved: bool = False  # publish resolved alerts under <routing_key>.resolved
    forward_tests: bool = False  # publish test notifications under <routing_key>.test
    mappings: dict[SenderName, dict[str, Any]] = {}  # {sender: {field: expression}}

    @model_validator(mode="after")
    def _expressions_parse(self) -> Senders:
        for sender, fields in self.mappings.items():
            for field, spec in fields.items():
                if spec is not None:  # null drops a default mapping
                    try:
                        parse_expression(spec, where=f"mappings.{sender}.{field}")
                    except ConfigError as exc:
                        raise ValueError(str(exc)) from None
        return self


class Options(_Model):
    """What `defaults` and every function entry may set."""

    project: Annotated[str | None, Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")] = None
    runtime: Annotated[str, Field(pattern=r"^python3[0-9]{2}$")] = "python312"
    region: Annotated[str | None, Field(pattern=r"^[a-z]+-[a-z]+[0-9]+$")] = None
    memory: Memory = "256Mi"
    cpu: Annotated[float | None, Field(gt=0, le=8), AfterValidator(_cloud_run_cpu)] = None
    timeout: Timeout = 60
    min_instances: Annotated[int, Field(ge=0, le=1000)] = 0
    max_instances: Annotated[int, Field(ge=1, le=1000)] = 100
    concurrency: Annotated[int, Field(ge=1, le=1000)] = 1
    workers: Annotated[int, Field(ge=1, le=32)] = 1
    ingress: Literal["all", "internal-only", "internal-and-gclb"] = "all"
    vpc_connector: Annotated[str | None, Field(pattern=r"^[a-z0-9/-]{1,300}$")] = None
    egress: Literal["private-ranges-only", "all"] | None = None
    service_account: Email | None = None
    allow_unauthenticated: bool = False
    auth: Auth | None = None
    senders: Senders = Senders()
    secrets: dict[EnvName, SecretRef] = {}
    env: dict[EnvName, Annotated[str, Field(max_length=32768)]] = {}


class Entry(Options):
    """One function: its identity, and any override of the defaults."""

    entry_point: Identifier | None = None  # default: the function's name
    source: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9_./-]+$")] = None  # functions/<name>
    queue: QueueName | None = None  # default: <exchange>.<name>


class Spool(_Model):
    """The spool (docs/guarantees.md): a Pub/Sub topic, and the drain that empties it."""

    topic: TopicId  # in the functions' `project`
    drain: Options = Options()  # the drain's overrides of the defaults (it has no `auth`)
    # Whom Eventarc invokes the drain as; default: the drain's own service account.
    trigger_service_account: Email | None = None


class Deployable(Options):
    """What one `gcloud functions deploy` takes: an entry with the defaults applied."""

    name: FunctionName
    entry_point: Identifier
    source: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9_./-]+$")] = None
    spool_topic: str | None = None  # the full name of the spool's topic, when there is one

    @property
    def exchange(self) -> str:
        return self.settings().amqp_exchange

    @property
    def source_dir(self) -> Path:
        return REPO / (self.source or f"functions/{self.name}")

    def settings_env(self) -> dict[str, str]:
        """The function's non-secret settings as env vars: its blocks', then its `env`'s."""
        return {**settings_env(**self.block_settings()), **self.env}

    def block_settings(self) -> dict[str, Any]:
        """The settings the manifest's own fields give (`auth`, `senders`, `project`, ...)."""
        return {"google_cloud_project": self.project}

    def settings(self) -> Settings:
        """The settings the function starts with, its secrets aside."""
        return Settings.from_env(self.settings_env())


class Function(Deployable):
    """An event function. Its name is an event type's (shared.schemas), which gives the model
    and the routing key."""

    queue: QueueName

    @property
    def model(self) -> type[Event]:
        return EVENT_TYPES[self.name]

    @property
    def routing_key(self) -> str:
        return self.model.routing_key

    def block_settings(self) -> dict[str, Any]:
        auth, senders = self.auth, self.senders
        return {
            "auth_mode": auth and auth.mode,
            "auth_tolerance_seconds": auth and auth.tolerance_seconds,
            "auth_timestamp_header": auth and auth.timestamp_header,
            "senders": senders.paths,
            "sender_default": senders.default,
            "sender_forward_resolved": senders.forward_resolved,
            "sender_forward_tests": senders.forward_tests,
            "sender_mappings": senders.mappings,
            "spool_topic": self.spool_topic,
            **super().block_settings(),
        }


class Drain(Deployable):
    """The spool's drain (functions/spool_drain), triggered by its topic."""

    trigger_service_account: Email | None = None


class Manifest(_Model):
    defaults: Options = Options()
    functions: Annotated[dict[FunctionName, Entry], Field(min_length=1)]
    spool: Spool | None = None


@dataclass(frozen=True)
class Deployment:
    """Everything the manifest deploys: the event functions, and the drain with the spool."""

    functions: list[Function]
    drain: Drain | None

    @property
    def deployables(self) -> list[Deployable]:
        return [*self.functions, *([self.drain] if self.drain else [])]


def load_manifest(path: Path = MANIFEST) -> list[Function]:
    """The event functions of the manifest at `path`; ManifestError if it is invalid."""
    return load_deployment(path).functions


def load_deployment(path: Path = MANIFEST) -> Deployment:
    """What the manifest at `path` deploys, defaults applied; ManifestError if invalid."""
    where = _display(path)
    try:
        raw = _parse(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"{where}: cannot read: {exc}") from exc
    except ManifestError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(_describe(where, exc)) from None
    defaults, spool = manifest.defaults, manifest.spool
    topic = f"projects/{defaults.project}/topics/{spool.topic}" if spool else None
    functions, problems = [], []
    for name, entry in manifest.functions.items():
        try:
            functions.append(_resolve(defaults, name, entry, topic))
        except ConfigError as exc:
            problems.append(f"{where}: functions.{name}.env: {exc}")
    problems += [
        f"{where}: functions.{fn.name}{p if p.startswith(':') else '.' + p}"
        for fn in functions
        for p in _problems(fn)
    ]
    queues: dict[str, str] = {}
    for fn in functions:
        if fn.queue in queues:
            problems.append(
                f"{where}: functions.{fn.name}.queue: {fn.queue!r} is also {queues[fn.queue]}'s"
            )
        queues.setdefault(fn.queue, fn.name)
    drain = None
    if spool is not None:
        try:
            drain = _resolve_drain(defaults, spool, topic)
        except ConfigError as exc:
            problems.append(f"{where}: spool.drain.env: {exc}")
        else:
            problems += [f"{where}: spool.{p}" for p in _spool_problems(defaults, drain, functions)]
    if problems:
        raise ManifestError("\n".join(problems))
    return Deployment(functions, drain)


def _merged(defaults: Options, entry: Options) -> dict[str, Any]:
    """The defaults under an entry's own fields; `env` and `secrets` merge key by key."""
    merged: dict[str, Any] = {
        **dict(defaults),
        **{field: getattr(entry, field) for field in entry.model_fields_set},
    }
    merged["env"] = {**defaults.env, **entry.env}
    merged["secrets"] = {**defaults.secrets, **entry.secrets}
    return merged


def _resolve(defaults: Options, name: str, entry: Entry, topic: str | None) -> Function:
    merged = _merged(defaults, entry)
    merged["entry_point"] = entry.entry_point or name
    # ConfigError for a bad env setting: the loader names the entry.
    merged["queue"] = entry.queue or f"{Settings.from_env(merged['env']).amqp_exchange}.{name}"
    return Function(name=name, spool_topic=topic, **merged)


def _resolve_drain(defaults: Options, spool: Spool, topic: str | None) -> Drain:
    """The drain: the defaults under its own fields, without what only callers need (`auth`
    and AUTH_SECRETS); reached by Eventarc alone (internal ingress, no unauthenticated calls)."""
    merged = _merged(defaults, spool.drain)
    merged.pop("auth")
    merged.pop("senders")
    merged["secrets"].pop("AUTH_SECRETS", None)
    for field, alone in (("ingress", "internal-only"), ("allow_unauthenticated", False)):
        if field not in spool.drain.model_fields_set:
            merged[field] = alone
    drain = Drain(
        name=DRAIN,
        entry_point=DRAIN,
        spool_topic=topic,
        trigger_service_account=spool.trigger_service_account,
        **merged,
    )
    drain.settings()  # ConfigError for a bad env setting: the loader names the block
    return drain


def _problems(fn: Function) -> list[str]:
    """What pydantic cannot see field by field: required settings and combinations."""
    if fn.name not in EVENT_TYPES:
        declare = f'class ...(Event, event_type="{fn.name}", routing_key="...")'
        missing = f": no event type {fn.name!r}: declare it in shared/schemas.py: {declare}"
        return [missing, *_missing_source(fn)]
    problems = ["auth: required (here or in defaults)"] if fn.auth is None else []
    problems += _deployable_problems(fn, REQUIRED_SECRETS)
    try:  # the checks the function makes at start, its secrets aside, and every adapter built
        Routes(fn.model, fn.settings()).check()
    except ConfigError as exc:
        problems.append(f"env or senders: {exc}")
    return problems + _missing_source(fn)


def _spool_problems(defaults: Options, drain: Drain, functions: list[Function]) -> list[str]:
    problems = [] if defaults.project else ["topic: needs `project` in defaults"]
    problems += [f"drain.{p}" for p in _deployable_problems(drain, BROKER_SECRETS)]
    if drain.allow_unauthenticated:
        problems.append("drain.allow_unauthenticated: only Eventarc may call the drain")
    problems += [
        f"drain: publishes to {drain.exchange!r}, but {fn.name} to {fn.exchange!r}"
        for fn in functions
        if fn.exchange != drain.exchange
    ]
    return problems + _missing_source(drain)


def _deployable_problems(fn: Deployable, required_secrets: tuple[str, ...]) -> list[str]:
    """What every function deployed must hold, the drain included."""
    problems = [
        f"{field}: required (here or in defaults)"
        for field in ("region", "service_account")
        if getattr(fn, field) is None
    ]
    if fn.concurrency > 1 and (fn.cpu or 0) < 1:
        problems.append(f"cpu: concurrency {fn.concurrency} needs cpu >= 1 (Cloud Run)")
    if fn.egress and not fn.vpc_connector:
        problems.append("egress: needs a vpc_connector")
    if fn.min_instances > fn.max_instances:
        problems.append(f"min_instances: {fn.min_instances} is above max_instances")
    problems += [f"secrets.{name}: required" for name in required_secrets if name not in fn.secrets]
    for name, ref in fn.secrets.items():
        if ref.via == "env" and ref.version == "latest":
            problems.append(
                f"secrets.{name}.version: pin a version for via: env (read once, at instance start)"
            )
        if ref.path and ref.via != "file":
            problems.append(f"secrets.{name}.path: only for via: file")
        if ref.via == "runtime" and "/" not in ref.secret and not fn.project:
            problems.append(f"secrets.{name}.secret: a short name needs `project`")
    mounts = [secret_mount_path(n, r) for n, r in fn.secrets.items() if r.via == "file"]
    dirs = [m.rsplit("/", 1)[0] for m in mounts]
    problems += [
        f"secrets: mount folder {d} used twice (Cloud Run mounts one secret per folder)"
        for d in sorted({d for d in dirs if dirs.count(d) > 1})
    ]
    from_blocks = {name.upper() for name in fn.block_settings()}
    for name in fn.env:
        secret_setting = name.removesuffix("_FILE").removesuffix("_SECRET")
        if FRAMEWORK_ENV.fullmatch(name) or name in from_blocks:
            problems.append(f"env.{name}: set by deploy, the platform or `auth`, not here")
        elif name in LOCAL_ONLY:
            problems.append(f"env.{name}: for local development only, never deployed")
        elif secret_setting in fn.secrets or secret_setting in REQUIRED_SECRETS:
            problems.append(f"env.{name}: {secret_setting} is a secret: set it under secrets")
    return problems


def _missing_source(fn: Deployable) -> list[str]:
    if (fn.source_dir / "main.py").is_file():
        return []
    return [f"source: {_display(fn.source_dir / 'main.py')} does not exist"]


def secret_mount_path(name: str, ref: SecretRef) -> str:
    """Where a file secret is mounted: one folder per secret, as Cloud Run requires."""
    return ref.path or f"/secrets/{name.lower().replace('_', '-')}/value"


def _describe(where: str, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        lines.append(f"{where}: {location}: {error['msg']}")
    return "\n".join(lines)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _parse(text: str) -> Any:
    """safe_load, refusing a key given twice (YAML would keep the last one silently)."""
    pending = [yaml.compose(text, Loader=yaml.SafeLoader)]
    while pending:
        node = pending.pop()
        if isinstance(node, yaml.MappingNode):
            keys = [key.value for key, _ in node.value]
            for key, _ in node.value:
                if keys.count(key.value) > 1:
                    raise ManifestError(
                        f"line {key.start_mark.line + 1}: duplicate key {key.value!r}"
                    )
            pending += [value for _, value in node.value]
        elif isinstance(node, yaml.SequenceNode):
            pending += node.value
    return yaml.safe_load(text)
