"""Which payload format serves which path of a function, as its settings say (shared.config):
SENDERS (the sender paths served), SENDER_DEFAULT (the format of a plain POST <url>),
SENDER_MAPPINGS (merged over the default mappings), SENDER_FORWARD_RESOLVED and
SENDER_FORWARD_TESTS."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.adapters.adapt import Adapter
from shared.adapters.alertmanager import ALERTMANAGER
from shared.adapters.cloud_monitoring import CLOUD_MONITORING
from shared.adapters.datadog import DATADOG
from shared.adapters.format import SenderFormat
from shared.adapters.grafana import GRAFANA
from shared.adapters.splunk import SPLUNK
from shared.config import Settings
from shared.errors import NotFoundError
from shared.schemas import Event

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


def routes_for(model: type[Event], settings: Settings) -> Routes:
    """The routes of a function relaying `model` events, as its settings ask."""
    adapters = {
        name: Adapter(
            sender,
            model.event_type,
            model,
            settings.sender_mappings.get(name),
            forward_resolved=settings.sender_forward_resolved,
            forward_tests=settings.sender_forward_tests,
        )
        for name, sender in SENDER_FORMATS.items()
        if settings.senders is None or name in settings.senders or name == settings.sender_default
    }
    by_path: dict[str, Adapter | None] = {f"/{name}": a for name, a in adapters.items()}
    by_path["/"] = adapters.get(settings.sender_default)
    return Routes(by_path)
