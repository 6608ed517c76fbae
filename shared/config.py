"""Settings from the environment, read once per process.

Environment variables; `shared.secrets` resolves the secret ones (NAME, NAME_FILE or NAME_SECRET):
    AMQP_URL                 amqps://user:password@host:port/vhost; comma-separated for failover
    AMQP_CA_CERT             PEM of the CA that signed the broker's certificate (secret)
    AMQP_CLIENT_CERT         PEM of our client certificate (secret)
    AMQP_CLIENT_KEY          PEM of our client key (secret)
    AMQP_TLS_SERVER_NAME     host name on the broker's certificate, when not the URL's host
    AMQP_EXCHANGE            topic exchange to publish to (default event-relay)
    AMQP_PUBLISH_TIMEOUT     seconds to wait for the broker's confirm (default 5)
    AMQP_CONNECT_TIMEOUT     seconds to open a connection, handshakes included (default 3)
    AMQP_HEARTBEAT           AMQP heartbeat in seconds (default 30)
    AMQP_ALLOW_PLAINTEXT     1 allows amqp:// URLs: local development only
    MAX_BODY_BYTES           largest accepted request body (default 262144)
    LOG_LEVEL                INFO by default
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ConfigError

# The prefixes of every event-relay setting (this module's, shared.secrets', shared.auth's and
# shared.adapters'): the tests and the local run clear a developer's shell of them.
SETTING_PREFIXES = ("AMQP_", "AUTH_", "SECRETS_", "SECRET_MANAGER_", "MAX_BODY", "SENDER")


class Settings(BaseModel):
    """Non-secret settings; each is read from the variable named like the field, upper-cased.

    A plain model rather than pydantic-settings: importing that costs ~20 ms of every cold
    start, for a job that is one dictionary comprehension here.
    """

    model_config = ConfigDict(frozen=True)

    amqp_exchange: str = Field("event-relay", min_length=1, max_length=255)
    amqp_publish_timeout: float = Field(5.0, gt=0, le=300)
    amqp_connect_timeout: float = Field(3.0, gt=0, le=60)
    amqp_heartbeat: int = Field(30, ge=0, le=600)
    amqp_tls_server_name: str | None = None
    amqp_allow_plaintext: bool = False
    max_body_bytes: int = Field(256 * 1024, gt=0, le=10 * 1024 * 1024)
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Settings from `environ`; an unset variable keeps the field's default."""
        names = {name.upper(): name for name in cls.model_fields}
        return cls.model_validate({names[k]: v for k, v in environ.items() if k in names})


@cache
def settings() -> Settings:
    """The process's settings; a bad value raises ConfigError naming the variable."""
    try:
        return Settings.from_env()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
