"""Which payload format serves which path of a function, as its settings say (shared.config):
SENDERS (the sender paths served), SENDER_DEFAULT (the format of a plain POST <url>) and, for
each sender, its adapter (shared.adapters) with SENDER_MAPPINGS merged over the defaults.

The adapters are built as a sender path's first request needs them: their modules cost every
start ~10 ms that a function serving only its own schema never needs. Mappings the settings
set are checked at start all the same (`Routes.check`), and the manifest check builds every
function's adapters before a deployment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.config import Settings
from shared.errors import NotFoundError
from shared.schemas import Event
from shared.vocabulary import CANONICAL, SENDER_NAMES, SenderName

if TYPE_CHECKING:  # only types: the adapters' modules load with the first adapter
    from shared.adapters import Adapter


class Routes:
    """The paths of one function: None for the canonical schema, else a sender's adapter."""

    def __init__(self, model: type[Event], settings: Settings) -> None:
        self._model = model
        self._settings = settings
        served = [
            name
            for name in SENDER_NAMES
            if settings.senders is None
            or name in settings.senders
            or name == settings.sender_default
        ]
        self._senders: dict[str, SenderName | None] = {f"/{name}": name for name in served}
        default = settings.sender_default
        self._senders["/"] = None if default == CANONICAL else default
        self._adapters: dict[SenderName, Adapter] = {}

    def check(self) -> Routes:
        """Build every adapter now: a mapping that cannot work raises its ConfigError."""
        for name in self._senders.values():
            if name is not None:
                self._adapter(name)
        return self

    def adapter_for(self, path: str) -> Adapter | None:
        """The adapter serving `path`, None for the canonical schema; NotFoundError otherwise."""
        key = path if path == "/" else path.removesuffix("/")
        if key not in self._senders:
            raise NotFoundError(f"No event route at {path[:100]}.")
        name = self._senders[key]
        return None if name is None else self._adapter(name)

    def _adapter(self, name: SenderName) -> Adapter:
        adapter = self._adapters.get(name)
        if adapter is None:
            from shared.adapters import SENDER_FORMATS, Adapter  # on first use: see above

            settings = self._settings
            adapter = self._adapters[name] = Adapter(
                SENDER_FORMATS[name],
                self._model.event_type,
                self._model,
                settings.sender_mappings.get(name),
                forward_resolved=settings.sender_forward_resolved,
                forward_tests=settings.sender_forward_tests,
            )
        return adapter


def routes_for(model: type[Event], settings: Settings) -> Routes:
    """The routes of a function relaying `model` events; the settings' own mappings checked
    now, the default ones when first used."""
    routes = Routes(model, settings)
    return routes.check() if settings.sender_mappings else routes
