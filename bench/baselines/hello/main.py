"""(c) A bare functions-framework hello world in ASGI mode, served by the same stack as
event-relay: it reads the body and answers 202 without publishing. The HTTP ceiling."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import JSONResponse


@functions_framework.aio.http
async def hello(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"id": "hello", "routing_key": "vm.isolate"}, status_code=202)
