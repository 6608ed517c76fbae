"""Declare a function: the one call each functions/<name>/main.py makes.

`event_function(Model)` relays one event type's alerts; `drain_function()` republishes what
the spool holds. Both check their settings at start, so a bad deployment fails at once with one
line that names the setting, and open the broker connection with the worker's first request.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable
from functools import partial
from typing import NoReturn, TypeVar, cast

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from shared.auth import authenticator_for
from shared.broker_params import check_broker_settings_at_start, connection_parameters
from shared.config import Settings, settings
from shared.delivery import Deliverer
from shared.drain import Drain
from shared.errors import RelayError
from shared.http_server import HttpFunction, serve_function
from shared.logs import configure_logging
from shared.pipeline import Relay
from shared.publisher import Publisher
from shared.routes import routes_for
from shared.schemas import Event
from shared.secrets import close_client
from shared.shutdown import call_on_sigterm
from shared.spool import Spool
from shared.vocabulary import DRAIN

Handler = TypeVar("Handler", Relay, Drain)
REQUEST_GC_THRESHOLD = 10_000  # the collector's gen-0 threshold once started (see _serve)


def event_function(model: type[Event]) -> HttpFunction:
    """The async HTTP function relaying `model` events, named after their event type."""

    def relay(config: Settings, publisher: Publisher) -> Relay:
        spool = None
        if config.spool_topic:
            spool = Spool(config.spool_topic, emulator_host=config.pubsub_emulator_host)
        return Relay(
            model,
            authenticator=authenticator_for(config),
            deliverer=Deliverer(publisher, spool, budget=config.request_timeout),
            max_body_bytes=config.max_body_bytes,
            routes=routes_for(model, config),
        )

    return _serve(model.event_type, relay)


def drain_function() -> HttpFunction:
    """The async function republishing each message Pub/Sub pushes from the spool."""
    return _serve(DRAIN, lambda _config, publisher: Drain(publisher))


def _serve(name: str, build: Callable[[Settings, Publisher], Handler]) -> HttpFunction:
    try:
        config = settings()
        configure_logging(config.log_level, config.google_cloud_project)
        check_broker_settings_at_start(config)
        publisher = Publisher(
            config.amqp_exchange,
            publish_timeout=config.amqp_publish_timeout,
            parameters=partial(connection_parameters, config),
        )
        handler = build(config, publisher)
    except RelayError as error:  # a setting or secret that cannot work
        refuse_to_start(name, error)
    finally:
        # The checks may have read secrets from Secret Manager in the gunicorn master: gRPC is
        # not fork-safe, so its channel must be closed before the workers are forked.
        close_client()
    # What a request allocates forms no reference cycle, so the collector's passes find nothing
    # to free, yet each walks every object alive (a 50-80 ms pause at 80 requests in flight):
    # freeze what start-up made out of its walks (shared with the forked workers as it is) and
    # run it a tenth as often as by default. Measured: -16 % CPU per event and -37 % p99 at 80.
    # The older generations keep the thresholds the package set (shared/__init__.py).
    gc.freeze()
    gc.set_threshold(REQUEST_GC_THRESHOLD, *gc.get_threshold()[1:])

    async def function(request: Request) -> Response:
        # No lifespan hook in ASGI mode: the worker's first request wires up the shutdown and
        # starts opening the broker connection, which proceeds whenever the request yields.
        call_on_sigterm(publisher.shut_down)
        publisher.warm_up()
        return await handler.handle(request)

    # functions-framework finds the target by this name and needs a plain function.
    function.__name__ = function.__qualname__ = name
    serve_function(function)
    return cast(HttpFunction, functions_framework.aio.http(function))


def refuse_to_start(name: str, error: RelayError) -> NoReturn:
    """One JSON line (Cloud Logging reads its severity) saying why, then exit: no traceback."""
    line = {"severity": "CRITICAL", "logger": "event_relay", "message": f"{name}: {error}"}
    print(json.dumps(line), file=sys.stderr, flush=True)
    raise SystemExit(1)
