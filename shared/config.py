"""Every setting of event-relay, read from the environment here and nowhere else.

A field `name` of `Settings` is the environment variable `NAME`. An empty variable counts as
unset; a bad value is a `ConfigError` of one line naming the variable. A secret setting is given
by exactly one of `NAME` (the value), `NAME_FILE` (the path of a file holding it, such as a secret
Cloud Run mounts) or `NAME_SECRET` (a Secret Manager secret: `projects/P/secrets/S[/versions/V]`,
or `S[:V]` in GOOGLE_CLOUD_PROJECT; version `latest` by default); `shared.secrets` reads it.

docs/configuration.md is generated from this model (`python -m deploy docs`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    model_validator,
)

from shared.errors import ConfigError
from shared.vocabulary import AUTH_MODES, CANONICAL, SENDER_NAMES, AuthMode, SenderName

SECRET_SUFFIXES = ("", "_FILE", "_SECRET")
_FULL_SECRET = re.compile(r"projects/([^/]+)/secrets/([^/]+)(?:/versions/([^/]+))?")
_SHORT_SECRET = re.compile(r"([\w-]+)(?::([\w-]+))?", re.ASCII)


@dataclass(frozen=True)
class SecretSource:
    """Where one secret setting comes from: `variable` names the form it was given in."""

    setting: str  # AMQP_URL
    variable: str  # AMQP_URL, AMQP_URL_FILE or AMQP_URL_SECRET
    kind: Literal["value", "file", "secret-manager"]
    reference: str = field(repr=False)  # the value itself, a file's path, or a version's name

    @property
    def where(self) -> str:
        """The source for a message: never the value itself."""
        return self.variable if self.kind == "value" else f"{self.variable} ({self.reference})"


def _switch(value: Any) -> Any:
    """The local-development switches and flags take 1 or 0, nothing that merely looks true."""
    if isinstance(value, bool):
        return value
    if value in ("1", "0"):
        return value == "1"
    raise ValueError("must be 1 or 0")


def _known_sender(name: str) -> str:
    if name not in SENDER_NAMES:
        raise ValueError(f"unknown sender {name!r}; known: {', '.join(SENDER_NAMES)}")
    return name


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(_known_sender(n.strip()) for n in value.split(",") if n.strip()) or None
    return value


def _sender_default(value: Any) -> Any:
    return value if value == CANONICAL else _known_sender(value)


def _json_mappings(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not JSON: {exc.msg}") from None
    if not isinstance(value, dict) or not all(isinstance(m, dict) for m in value.values()):
        raise ValueError('must be {"<sender>": {"<field>": <expression>}}')
    for name in value:
        _known_sender(name)
    return value


def _auth_mode(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip().lower()
    if value not in AUTH_MODES:
        raise ValueError(f"must be one of {', '.join(AUTH_MODES)}")
    return value


def _log_level(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _lower(value: str) -> str:
    # Not `str.lower`: pydantic reads a validator's signature, and a builtin's is parsed from
    # its text by the tokenize module, whose first use compiles a large regex (~3 ms of a start).
    return value.lower()


Secret = SecretSource | None
_LOCAL_ONLY: dict[str, JsonValue] = {
    "local_only": True
}  # never deployed: a switch for local runs and tests
Switch = Annotated[bool, BeforeValidator(_switch)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Settings(BaseModel):
    """The settings of every part of event-relay: functions, deploy tools, tests."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    # --- the broker --------------------------------------------------------------------
    amqp_url: Secret = Field(
        None,
        description="`amqps://user:password@host:port/vhost`; several, comma-separated, are "
        "tried in order when a connection is opened (failover). Required.",
    )
    amqp_ca_cert: Secret = Field(
        None, description="PEM of the CA that signed the broker's certificate. Required."
    )
    amqp_client_cert: Secret = Field(
        None, description="PEM of our client certificate (mutual TLS). Required."
    )
    amqp_client_key: Secret = Field(None, description="PEM of its private key. Required.")
    amqp_tls_server_name: str | None = Field(
        None,
        description="The host name to verify on the broker's certificate, when it is not the "
        "URL's host.",
    )
    amqp_exchange: str = Field(
        "event-relay", min_length=1, max_length=255, description="The topic exchange to publish to."
    )
    amqp_publish_timeout: float = Field(
        5.0,
        gt=0,
        le=300,
        description="Seconds a request waits for the broker (connect, publish and confirm) "
        "before it answers 503.",
    )
    amqp_connect_timeout: float = Field(
        3.0, gt=0, le=60, description="Seconds to open a connection, TLS and AMQP handshakes."
    )
    amqp_heartbeat: int = Field(30, ge=0, le=600, description="AMQP heartbeat, seconds.")
    amqp_allow_plaintext: Switch = Field(
        False,
        json_schema_extra=_LOCAL_ONLY,
        description="`1` allows an `amqp://` URL: **local development only**, refused on Cloud "
        "Run (`K_SERVICE` set).",
    )

    # --- requests ----------------------------------------------------------------------
    max_body_bytes: int = Field(
        256 * 1024, gt=0, le=10 * 1024 * 1024, description="The largest request body, bytes."
    )
    log_level: Annotated[LogLevel, BeforeValidator(_log_level)] = Field(
        "INFO", description="`DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`."
    )

    # --- authentication ----------------------------------------------------------------
    auth_mode: Annotated[AuthMode | None, BeforeValidator(_auth_mode)] = Field(
        None,
        description="How callers authenticate: " + ", ".join(f"`{m}`" for m in AUTH_MODES) + ". "
        "A function without it (or `AUTH_DISABLED=1`) refuses to start.",
    )
    auth_secrets: Secret = Field(
        None,
        description="Tokens, `user:password` pairs or signing secrets, separated by commas or "
        "newlines; any one matches, so old and new overlap during a rotation. Required.",
    )
    auth_tolerance_seconds: int = Field(
        300, gt=0, le=86400, description="The replay window of the signed modes, plus or minus."
    )
    auth_timestamp_header: Annotated[
        str | None, Field(pattern=r"^[A-Za-z0-9-]{1,100}$"), AfterValidator(_lower)
    ] = Field(
        None,
        description="`grafana-hmac`: the timestamp header named on the Grafana contact point "
        "(then required). Unset: `X-Grafana-Alerting-Signature-Timestamp` is checked when sent.",
    )
    auth_disabled: Switch = Field(
        False,
        json_schema_extra=_LOCAL_ONLY,
        description="`1` lets every request through and says so loudly: **local development "
        "only**, refused on Cloud Run.",
    )

    # --- sender payloads (shared.adapters) ---------------------------------------------
    senders: Annotated[tuple[SenderName, ...] | None, BeforeValidator(_comma_list)] = Field(
        None,
        description="The sender paths served (`POST <url>/<sender>`), comma-separated: "
        + ", ".join(SENDER_NAMES)
        + ". Unset: all of them.",
    )
    sender_default: Annotated[
        Literal["canonical"] | SenderName, BeforeValidator(_sender_default)
    ] = Field(CANONICAL, description="The format of a plain `POST <url>`: `canonical` or a sender.")
    sender_mappings: Annotated[dict[str, dict[str, Any]], BeforeValidator(_json_mappings)] = Field(
        default_factory=dict,
        description='JSON `{"<sender>": {"<field>": <expression>}}`, merged over the default '
        "mappings field by field; `null` drops a default (see Senders).",
    )
    sender_forward_resolved: Switch = Field(
        False,
        description="`1` publishes resolved alerts too, under `<routing key>.resolved`; "
        "unset, they are skipped (and still answered 202).",
    )
    sender_forward_tests: Switch = Field(
        False,
        description="`1` publishes senders' test notifications under `<routing key>.test`, "
        "to see the wiring work end to end; unset, they are skipped (and still answered 202).",
    )

    # --- the spool (shared.spool) -------------------------------------------------------
    spool_topic: Annotated[str | None, Field(pattern=r"^projects/[^/\s]+/topics/[^/\s]+$")] = Field(
        None,
        description="`projects/P/topics/T`: a message the broker cannot confirm is published "
        "there instead, for the drain to republish; the caller gets its 202 once Pub/Sub "
        "acknowledged it. Unset: no spool, the caller gets a 503.",
    )
    request_timeout: float = Field(
        8.0,
        gt=0,
        le=300,
        description="With `SPOOL_TOPIC`: seconds a request takes at most, the broker attempt "
        "(`AMQP_PUBLISH_TIMEOUT` of them) and then the spool included. Keep it under the "
        "senders' webhook timeouts (about 10 s).",
    )
    pubsub_emulator_host: str | None = Field(
        None,
        json_schema_extra=_LOCAL_ONLY,
        description="`host:port` of a Pub/Sub emulator for the spool: **local runs and tests "
        "only**.",
    )

    # --- secrets -----------------------------------------------------------------------
    secrets_cache_seconds: float = Field(
        300.0,
        description="How long a secret read from a file or Secret Manager is reused; once "
        "older, it is served while a new read runs in the background. `0` or less: read "
        "every time. A failed read keeps the last value and is retried after at most 30 s.",
    )
    secret_manager_emulator_host: str | None = Field(
        None,
        json_schema_extra=_LOCAL_ONLY,
        description="`host:port` of a Secret Manager fake over plaintext gRPC: **tests only**. "
        "Unset, the client uses Application Default Credentials.",
    )

    # --- set by the platform -----------------------------------------------------------
    google_cloud_project: str | None = Field(
        None,
        description="The project of short Secret Manager names and of Cloud Trace ids in the "
        "logs (Cloud Run does not set it).",
    )
    k_service: str | None = Field(
        None,
        description="Set by Cloud Run (the service's name): the local-development switches "
        "are refused where it is set.",
    )

    @model_validator(mode="after")
    def _spool_has_time_left(self) -> Settings:
        if self.spool_topic and self.request_timeout - self.amqp_publish_timeout < 1:
            raise ConfigError(
                "REQUEST_TIMEOUT must leave the spool at least 1 s after AMQP_PUBLISH_TIMEOUT"
            )
        return self

    @model_validator(mode="after")
    def _no_development_switch_on_cloud_run(self) -> Settings:
        if self.k_service and self.auth_disabled:
            raise ConfigError("AUTH_DISABLED=1 is for local development only, not Cloud Run")
        if self.k_service and self.amqp_allow_plaintext:
            raise ConfigError("AMQP_ALLOW_PLAINTEXT is for local development, not Cloud Run")
        return self

    @property
    def broker_secrets(self) -> tuple[Secret, Secret, Secret, Secret]:
        return self.amqp_url, self.amqp_ca_cert, self.amqp_client_cert, self.amqp_client_key

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """The settings `environ` gives; ConfigError (one line, naming the variable) if bad."""
        given = {k: v for k, v in environ.items() if v}
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            variable = name.upper()
            if name in SECRET_SETTINGS:
                values[name] = secret_source(variable, given)
            elif variable in given:
                values[name] = given[variable]
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(_one_line(exc)) from None

    @classmethod
    def variables(cls) -> list[str]:
        """Every environment variable the model reads, secret forms included."""
        return [
            name.upper() + suffix
            for name in cls.model_fields
            for suffix in (SECRET_SUFFIXES if name in SECRET_SETTINGS else ("",))
        ]


# The settings a secret source fills (they hold no value: `shared.secrets` reads it).
SECRET_SETTINGS = tuple(
    name
    for name, info in Settings.model_fields.items()
    if SecretSource in get_args(info.annotation)
)


# Variables of the local-development switches, which no deployment may set.
LOCAL_ONLY = tuple(
    name.upper()
    for name, info in Settings.model_fields.items()
    if info.json_schema_extra == _LOCAL_ONLY
)


@cache
def settings() -> Settings:
    """The process's settings, read once; a bad value raises ConfigError naming the variable."""
    return Settings.from_env()


def settings_env(**values: Any) -> dict[str, str]:
    """Settings as the variables `Settings.from_env` reads back; None and defaults are left out."""
    env = {}
    for name, value in values.items():
        default = Settings.model_fields[name].get_default(call_default_factory=True)
        if value is None or value == default:
            continue
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif isinstance(value, list | tuple):
            text = ",".join(map(str, value))
        elif isinstance(value, dict):
            text = json.dumps(value, separators=(",", ":"))
        else:
            text = str(value)
        env[name.upper()] = text
    return env


def secret_source(setting: str, given: Mapping[str, str]) -> SecretSource | None:
    forms = [setting + suffix for suffix in SECRET_SUFFIXES if setting + suffix in given]
    if len(forms) > 1:
        raise ConfigError(f"set only one of {', '.join(forms)} (secret setting {setting})")
    if not forms:
        return None
    variable = forms[0]
    if variable == setting:
        return SecretSource(setting, variable, "value", given[variable])
    if variable.endswith("_FILE"):
        return SecretSource(setting, variable, "file", given[variable])
    return SecretSource(setting, variable, "secret-manager", _version_name(variable, given))


def _version_name(variable: str, given: Mapping[str, str]) -> str:
    """The full name of the Secret Manager version a NAME_SECRET variable refers to."""
    ref = given[variable]
    if m := _FULL_SECRET.fullmatch(ref):
        project, secret, version = m.groups()
    elif m := _SHORT_SECRET.fullmatch(ref):
        (secret, version), project = m.groups(), given.get("GOOGLE_CLOUD_PROJECT")
        if not project:
            raise ConfigError(
                f"{variable} is a short secret name: set GOOGLE_CLOUD_PROJECT or a full path"
            )
    else:
        raise ConfigError(f"{variable} must be projects/P/secrets/S[/versions/V] or S[:V]")
    return f"projects/{project}/secrets/{secret}/versions/{version or 'latest'}"


def _one_line(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        variable, *rest = (str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{'.'.join([variable.upper(), *rest])}: {message}")
    return "invalid setting " + "; ".join(problems)
