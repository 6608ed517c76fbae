"""Datadog's webhook integration. Its default payload carries no host: users paste the template
in docs/senders.md, a superset of the default payload, whose keys these defaults read, and the
keys other widely used templates give the same variables.

https://docs.datadoghq.com/integrations/webhooks/
"""

from __future__ import annotations

from shared.adapters.format import SenderFormat

# The keys templates give $HOSTNAME, then those given $ALERT_SCOPE and $TAGS ("host:NAME,...").
TAG_LISTS = ("alert_scope", "scope", "tags")
# The keys templates give $EVENT_TITLE or $ALERT_TITLE, then $EVENT_MSG or $TEXT_ONLY_MSG.
TITLES = ("title", "alert_title", "event_title")
MESSAGES = ("body", "text_only_msg", "event_msg")

DATADOG = SenderFormat(
    name="datadog",
    title="Datadog",
    base={
        "hostname": [
            "hostname",
            "host_name",
            "host",
            *(f"{key} | tag(host)" for key in TAG_LISTS),
        ],
        "severity": [
            "alert_priority | severity",
            "priority | severity",
            "alert_type | severity",
        ],
        "source": "=datadog",
        "detected_at": ["date | time", "last_updated | time", "date_posix | time"],
        "summary": [f"{key} | clean | truncate(1000)" for key in (*TITLES, *MESSAGES)],
        "details": {
            "event_id": "id | text",
            "alert_id": "alert_id | text",
            "event_type": "event_type",
            "alert_type": "alert_type",
            "alert_transition": "alert_transition",
            "priority": ["alert_priority", "priority"],
            "scope": ["scope", "alert_scope"],
            "tags": "tags",
            "link": "link",
            "org": "org",
        },
    },
    by_name=("{field}", *(f"{key} | tag({{field}})" for key in TAG_LISTS)),
    identity=(["id", "event_id"], "alert_transition"),
    status=["alert_transition | lower", "alert_type | lower"],
    resolved=frozenset({"recovered", "success"}),
    # A monitor's "Test Notifications" button puts "[TEST]" before the title and "Test
    # notification triggered by <user>" in the message (docs.datadoghq.com/monitors/notify/).
    tests=(
        *({key: r"\s*\[TEST\].*"} for key in TITLES),
        *({key: r".*Test notification triggered by .*"} for key in MESSAGES),
    ),
    # $ALERT_TYPE: error is the Alert state; $ALERT_PRIORITY: P1 (highest) to P5.
    severities={
        "success": "info",
        "p1": "critical",
        "p2": "critical",
        "p3": "warning",
        "p4": "info",
        "p5": "info",
    },
)
