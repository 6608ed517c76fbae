"""(i) The cold-start floor of any function that validates with pydantic and publishes with
pika: the hello world (c) plus importing both and validating the body with a small strict
model. It publishes nothing: measured for its cold start only, beside (a) and (c)."""

from __future__ import annotations

import functions_framework.aio
import pika  # noqa: F401  # imported, as a publisher must, but no connection is opened
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse


class Alert(BaseModel):
    model_config = ConfigDict(strict=True)

    hostname: str = Field(min_length=1, max_length=253)


@functions_framework.aio.http
async def hello(request: Request) -> JSONResponse:
    alert = Alert.model_validate_json(await request.body())
    return JSONResponse({"id": alert.hostname, "routing_key": "vm.isolate"}, status_code=202)
