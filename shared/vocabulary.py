"""The names event-relay's parts must agree on, written once: shared/ and deploy/ import them."""

from __future__ import annotations

from typing import Final, Literal, get_args

AuthMode = Literal["bearer", "basic", "query-token", "standard-webhooks", "grafana-hmac"]
AUTH_MODES: tuple[AuthMode, ...] = get_args(AuthMode)

# The sender payloads a function can take, each at POST <url>/<name> (shared.adapters).
SenderName = Literal["alertmanager", "grafana", "datadog", "cloud-monitoring", "splunk"]
SENDER_NAMES: tuple[SenderName, ...] = get_args(SenderName)
# The format of a plain POST <url>: the event type's own schema.
CANONICAL: Literal["canonical"] = "canonical"

# Suffixes of the routing key, queue and event type of a forwarded resolved alert and of a
# forwarded test notification.
RESOLVED: Final = "resolved"
TEST: Final = "test"

# The function that republishes what the spool holds (functions/spool_drain).
DRAIN: Final = "spool_drain"

# Ids that become the AMQP message_id: printable ASCII, at most 255 bytes on the wire.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"  # a caller's Idempotency-Key header
WEBHOOK_ID_PATTERN = r"^[\x21-\x7e]{1,255}$"  # a Standard Webhooks webhook-id header
