"""Which payload format serves which path of a function, configured from the environment.

Environment variables (the deploy manifest sets them per function):
    SENDERS                  comma-separated formats served at POST <url>/<sender>; default all:
                             alertmanager, grafana, datadog, cloud-monitoring, splunk
    SENDER_DEFAULT           the format of a plain POST <url>: canonical (default) or a sender
    SENDER_MAPPINGS          JSON {"<sender>": {"<field>": <expression>}}: merged over the defaults
                             field by field; null drops a default (see shared.adapters.mapping)
    SENDER_FORWARD_RESOLVED  1 publishes resolved alerts too, under "<routing key>.resolved";
                             unset or 0 skips them (they still get a 202)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from shared.adapters.adapt import Adapter
from shared.adapters.alertmanager import ALERTMANAGER
from shared.adapters.cloud_monitoring import CLOUD_MONITORING
from shared.adapters.datadog import DATADOG
from shared.adapters.format import SenderFormat
from shared.adapters.grafana import GRAFANA
from shared.adapters.splunk import SPLUNK
from shared.errors import ConfigError, NotFoundError
from shared.schemas import Event

CANONICAL = "canonical"
SENDER_FORMATS: Mapping[str, SenderFormat] = {
    f.name: f for f in (ALERTMANAGER, GRAFANA, DATADOG, CLOUD_MONITORING, SPLUNK)
}


@dataclass(frozen=True)
class Routes:
    """The adapters of one function, by path; None stands for the canonical schema."""

    by_path: Mapping[str, Adapter | None]

    def adapter_for(self, path: str) -> Adapter | None:
        """The adapter serving `path`, None for the canonical schema; NotFoundError otherwise."""
        key = path if path == "/" else path.removesuffix("/")
        if key not in self.by_path:
            raise NotFoundError(f"No event route at {path[:100]}.")
        return self.by_path[key]


def routes_from_env(
    event_type: str, model: type[Event], environ: Mapping[str, str] = os.environ
) -> Routes:
    """The routes SENDERS, SENDER_DEFAULT, SENDER_MAPPINGS and SENDER_FORWARD_RESOLVED ask for."""
    names = [n.strip() for n in environ.get("SENDERS", "").split(",") if n.strip()]
    for name in names:
        _check_sender(name, "SENDERS")
    default = environ.get("SENDER_DEFAULT", "").strip() or CANONICAL
    if default != CANONICAL:
        _check_sender(default, "SENDER_DEFAULT")
    forward = environ.get("SENDER_FORWARD_RESOLVED", "").strip()
    if forward not in ("", "0", "1"):
        raise ConfigError("SENDER_FORWARD_RESOLVED must be 1 or 0")
    mappings = _mappings(environ.get("SENDER_MAPPINGS", ""))
    adapters = {
        name: Adapter(
            sender, event_type, model, mappings.get(name), forward_resolved=forward == "1"
        )
        for name, sender in SENDER_FORMATS.items()
        if not names or name in names or name == default
    }
    by_path: dict[str, Adapter | None] = {f"/{name}": a for name, a in adapters.items()}
    by_path["/"] = adapters.get(default)
    return Routes(by_path)


def _check_sender(name: str, setting: str) -> None:
    if name not in SENDER_FORMATS:
        known = ", ".join(SENDER_FORMATS)
        raise ConfigError(f"{setting}: unknown sender {name!r}; known: {known}")


def _mappings(raw: str) -> dict[str, dict[str, object]]:
    if not raw.strip():
        return {}
    try:
        mappings = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"SENDER_MAPPINGS is not JSON: {exc.msg}") from exc
    if not isinstance(mappings, dict) or not all(isinstance(m, dict) for m in mappings.values()):
        raise ConfigError('SENDER_MAPPINGS must be {"<sender>": {"<field>": <expression>}}')
    for name in mappings:
        _check_sender(name, "SENDER_MAPPINGS")
    return mappings
