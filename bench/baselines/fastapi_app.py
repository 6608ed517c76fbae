"""(f) The design a user would otherwise write: FastAPI under plain uvicorn, publishing with
aio-pika on one robust connection, with publisher confirms, persistent messages and
mandatory=True. `on_return_raises=True`: without it an unroutable message is a result, not an
error, and would get a 202.

    uvicorn bench.baselines.fastapi_app:app --host 127.0.0.1 --port 8080
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustConnection
from fastapi import FastAPI, Header, HTTPException

from bench.baselines.common import (
    EVENT_TYPE,
    EXCHANGE,
    PERSISTENT,
    ROUTING_KEY,
    VmIsolateAlert,
    amqp_url,
    authorized,
    envelope,
    tls_context,
)

PUBLISH_TIMEOUT_SECONDS = 5.0


class Broker:
    connection: AbstractRobustConnection
    exchange: AbstractExchange


broker = Broker()


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    broker.connection = await aio_pika.connect_robust(amqp_url(), ssl_context=tls_context())
    channel = await broker.connection.channel(publisher_confirms=True, on_return_raises=True)
    broker.exchange = await channel.get_exchange(EXCHANGE, ensure=False)
    try:
        yield
    finally:
        await broker.connection.close()


app = FastAPI(lifespan=lifespan)


@app.post("/", status_code=202)
async def vm_isolate(
    alert: VmIsolateAlert, authorization: Annotated[str | None, Header()] = None
) -> dict[str, Any]:
    if not authorized(authorization):
        raise HTTPException(401, "unauthorized")
    event_id = str(uuid.uuid4())
    message = aio_pika.Message(
        envelope(alert, event_id),
        content_type="application/cloudevents+json",
        delivery_mode=PERSISTENT,
        message_id=event_id,
        type=EVENT_TYPE,
        app_id="bench-baseline",
    )
    try:
        await broker.exchange.publish(
            message, ROUTING_KEY, mandatory=True, timeout=PUBLISH_TIMEOUT_SECONDS
        )
    except (*aio_pika.exceptions.CONNECTION_EXCEPTIONS, TimeoutError) as exc:
        raise HTTPException(503, "broker unavailable") from exc
    return {"id": event_id, "routing_key": ROUTING_KEY}
