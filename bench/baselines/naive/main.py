"""(b) The naive design, as tutorials write it: a functions-framework function (the default
Flask flavour) that opens a new TLS connection to the broker for every request, publishes with
a confirm, and closes it."""

from __future__ import annotations

import uuid
from typing import Any

import functions_framework
import pika
from flask import Request
from pydantic import ValidationError

from bench.baselines.common import (
    EXCHANGE,
    ROUTING_KEY,
    VmIsolateAlert,
    authorized,
    envelope,
    pika_parameters,
    pika_properties,
)

# Generous to the design: the TLS context and parameters are built once, not per request.
PARAMETERS = pika_parameters()


@functions_framework.http
def vm_isolate(request: Request) -> tuple[dict[str, Any], int]:
    if not authorized(request.headers.get("Authorization")):
        return {"error": "unauthorized"}, 401
    try:
        alert = VmIsolateAlert.model_validate(request.get_json())
    except ValidationError as exc:
        return {"errors": exc.errors(include_url=False, include_input=False)}, 422
    event_id = str(uuid.uuid4())
    connection = pika.BlockingConnection(PARAMETERS)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            EXCHANGE,
            ROUTING_KEY,
            envelope(alert, event_id),
            pika_properties(event_id),
            mandatory=True,
        )
    except pika.exceptions.AMQPError:
        return {"error": "broker unavailable"}, 503
    finally:
        if connection.is_open:
            connection.close()
    return {"id": event_id, "routing_key": ROUTING_KEY}, 202
