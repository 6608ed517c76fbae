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

    def __init_subclass__(cls, **answer: Any) -> None:
        """`class XError(Base, status=..., slug=..., title=...)`: how it is answered over HTTP."""
        super().__init_subclass__()
        for name, value in answer.items():
            if not hasattr(cls, name):
                raise TypeError(f"{cls.__name__}: {name} is not an attribute of errors")
            setattr(cls, name, value)


class ConfigError(RelayError):
    """A setting is missing or invalid: the function refuses to start."""


# --- 4xx: the caller's fault; nothing was published ------------------------------------


class RequestError(RelayError, status=400, slug="bad-request", title="Bad request"):
    """The request is wrong; the caller must change it before retrying."""

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class NotFoundError(RequestError, status=404, slug="not-found", title="Not found"):
    """No route serves this path."""


class MethodNotAllowedError(
    RequestError, status=405, slug="method-not-allowed", title="Method not allowed"
):
    """Only POST is accepted."""


class PayloadTooLargeError(
    RequestError, status=413, slug="payload-too-large", title="Payload too large"
):
    """The body is larger than MAX_BODY_BYTES."""


class UnsupportedMediaTypeError(
    RequestError, status=415, slug="unsupported-media-type", title="Unsupported media type"
):
    """The body is not declared as JSON."""


class MalformedJsonError(RequestError, status=400, slug="malformed-json", title="Malformed JSON"):
    """The body is not a well-formed JSON object."""


class ValidationFailedError(
    RequestError, status=422, slug="validation-failed", title="Validation failed"
):
    """The JSON does not satisfy the event type's schema."""


class AuthenticationError(RequestError, status=401, slug="unauthorized", title="Unauthorized"):
    """Credentials are missing or invalid; `reason` is logged, never sent back."""

    def __init__(self, reason: str, *, challenge: str) -> None:
        super().__init__("Missing or invalid credentials.")
        self.reason = reason
        self.challenge = challenge


# --- 503: ours; the caller retries ------------------------------------------------------


class UnavailableError(RelayError, status=503, slug="unavailable", title="Service unavailable"):
    """We could not take the event now; the caller retries after `retry_after` seconds."""

    # What the caller is told; the specifics (hosts, secret names, broker replies) are logged.
    public_detail = "The event could not be relayed now; retry after Retry-After seconds."

    def __init__(self, detail: str, *, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = max(1, retry_after)


class BrokerUnavailableError(
    UnavailableError, slug="broker-unavailable", public_detail="The message broker is unavailable."
):
    """No connection to the broker could be opened or kept."""


class BrokerBlockedError(
    UnavailableError,
    slug="broker-blocked",
    public_detail="The message broker accepts no messages for now.",
):
    """The broker blocks publishers (a memory or disk alarm)."""


class PublishTimeoutError(
    UnavailableError,
    slug="publish-timeout",
    public_detail="The message broker did not confirm the message in time.",
):
    """The broker did not confirm the message within AMQP_PUBLISH_TIMEOUT."""


class PublishRejectedError(
    UnavailableError,
    slug="publish-rejected",
    public_detail="The message broker refused the message.",
):
    """The broker nacked the message (for instance a full queue with reject-publish)."""


class UnroutableError(
    UnavailableError,
    slug="unroutable",
    public_detail="The message broker has no queue for this event type.",
):
    """The broker returned the message: no queue is bound for its routing key."""


class SecretUnavailableError(
    UnavailableError,
    slug="secret-unavailable",
    public_detail="A setting of this function could not be read.",
):
    """A secret setting could not be read (missing, permission denied, wrong project)."""


class SpoolUnavailableError(UnavailableError, slug="spool-unavailable"):
    """Pub/Sub did not acknowledge a spooled message in time."""


# --- the drain ---------------------------------------------------------------------------


class SpooledMessageError(RelayError):
    """A message on the spool that the drain cannot republish; `permanent` when it never will
    be (not ours, or tampered with) rather than not yet (a newer event type, another exchange)."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.permanent = permanent
