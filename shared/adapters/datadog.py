"""Datadog's webhook integration. Its default payload carries no host: users paste the template
in the README ("Senders"), a superset of the default payload, whose keys these defaults read.

https://docs.datadoghq.com/integrations/webhooks/
"""

from __future__ import annotations

from shared.adapters.format import SenderFormat

DATADOG = SenderFormat(
    name="datadog",
    title="Datadog",
    base={
        "hostname": ["hostname", "scope | tag(host)", "tags | tag(host)"],
        "severity": ["alert_priority | severity", "alert_type | severity"],
        "source": "=datadog",
        "detected_at": ["date | time", "last_updated | time"],
        "summary": ["title | clean | truncate(1000)", "body | clean | truncate(1000)"],
        "details": {
            "event_id": "id | text",
            "alert_id": "alert_id | text",
            "event_type": "event_type",
            "alert_type": "alert_type",
            "alert_transition": "alert_transition",
            "priority": ["alert_priority", "priority"],
            "scope": "scope",
            "tags": "tags",
            "link": "link",
            "org": "org",
        },
    },
    by_name=("{field}", "scope | tag({field})", "tags | tag({field})"),
    identity=("id", "alert_transition"),
    status=["alert_transition | lower", "alert_type | lower"],
    resolved=frozenset({"recovered", "success"}),
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
