"""One error family: every error event-relay raises on purpose derives from RelayError.

Errors that reach HTTP carry their status code and a problem slug; `shared.problems` turns
them into RFC 9457 responses in one place.
"""

from __future__ import annotations

from typing import Any


class RelayError(Exception):
    """Root of every error event-relay raises on purpose."""

    status: int = 500
    slug: str = "internal"
    title: str = "Internal error"


class ConfigError(RelayError):
    """A setting is missing or invalid: the function refuses to start."""


# --- 4xx: the caller's fault; nothing was published ------------------------------------


class RequestError(RelayError):
    """The request is wrong; the caller must change it before retrying."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class NotFoundError(RequestError):
    """No route serves this path."""

    status = 404
    slug = "not-found"
    title = "Not found"


class MethodNotAllowedError(RequestError):
    """Only POST is accepted."""

    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class PayloadTooLargeError(RequestError):
    """The body is larger than MAX_BODY_BYTES."""

    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaTypeError(RequestError):
    """The body is not declared as JSON."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class MalformedJsonError(RequestError):
    """The body is not a well-formed JSON object."""

    status = 400
    slug = "malformed-json"
    title = "Malformed JSON"


class ValidationFailedError(RequestError):
    """The JSON does not satisfy the event type's schema."""

    status = 422
    slug = "validation-failed"
    title = "Validation failed"


class AuthenticationError(RequestError):
    """Credentials are missing or invalid; `reason` is logged, never sent back."""

    status = 401
    slug = "unauthorized"
    title = "Unauthorized"

    def __init__(self, reason: str, *, challenge: str) -> None:
        super().__init__("Missing or invalid credentials.")
        self.reason = reason
        self.challenge = challenge


# --- 503: ours; the caller retries ------------------------------------------------------


class UnavailableError(RelayError):
    """We could not take the event now; the caller retries after `retry_after` seconds."""

    status = 503
    slug = "unavailable"
    title = "Service unavailable"
    # What the caller is told; the specifics (hosts, secret names, broker replies) are logged.
    public_detail = "The event could not be relayed now; retry after Retry-After seconds."

    def __init__(self, detail: str, *, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = max(1, retry_after)


class BrokerUnavailableError(UnavailableError):
    """No connection to the broker could be opened or kept."""

    slug = "broker-unavailable"
    public_detail = "The message broker is unavailable."


class BrokerBlockedError(UnavailableError):
    """The broker blocks publishers (a memory or disk alarm)."""

    slug = "broker-blocked"
    public_detail = "The message broker accepts no messages for now."


class PublishTimeoutError(UnavailableError):
    """The broker did not confirm the message within AMQP_PUBLISH_TIMEOUT."""

    slug = "publish-timeout"
    public_detail = "The message broker did not confirm the message in time."


class PublishRejectedError(UnavailableError):
    """The broker nacked the message (for instance a full queue with reject-publish)."""

    slug = "publish-rejected"
    public_detail = "The message broker refused the message."


class UnroutableError(UnavailableError):
    """The broker returned the message: no queue is bound for its routing key."""

    slug = "unroutable"
    public_detail = "The message broker has no queue for this event type."


class SecretUnavailableError(UnavailableError):
    """A secret setting could not be read (missing, permission denied, wrong project)."""

    slug = "secret-unavailable"
    public_detail = "A setting of this function could not be read."
