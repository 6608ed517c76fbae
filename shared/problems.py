"""Errors become RFC 9457 problem+json responses here, and only here."""

from __future__ import annotations

from starlette.responses import JSONResponse

from shared.errors import (
    AuthenticationError,
    MethodNotAllowedError,
    RelayError,
    RequestError,
    UnavailableError,
)

PROBLEM_TYPE_BASE = "urn:event-relay:problem:"
MEDIA_TYPE = "application/problem+json"


def problem_response(error: RelayError) -> JSONResponse:
    """The response for `error`: its status, a problem body and the headers it calls for."""
    body: dict[str, object] = {
        "type": PROBLEM_TYPE_BASE + error.slug,
        "title": error.title,
        "status": error.status,
    }
    headers: dict[str, str] = {}
    if isinstance(error, RequestError):
        body["detail"] = error.detail
    if isinstance(error, UnavailableError):
        body["detail"] = error.public_detail  # anyone may ask, even unauthenticated
    if isinstance(error, RequestError) and error.errors is not None:
        body["errors"] = error.errors
    if isinstance(error, UnavailableError):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, AuthenticationError):
        headers["WWW-Authenticate"] = error.challenge
    if isinstance(error, MethodNotAllowedError):
        headers["Allow"] = "POST"
    return JSONResponse(body, status_code=error.status, headers=headers, media_type=MEDIA_TYPE)


def internal_error_response() -> JSONResponse:
    """A generic answer for a bug: the details go to the log, never to the caller."""
    return problem_response(RelayError())
