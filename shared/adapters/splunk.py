"""Splunk's webhook alert action: the search's first result row in `result`.

https://docs.splunk.com/Documentation/Splunk/latest/Alert/Webhooks
"""

from __future__ import annotations

from shared.adapters.format import SenderFormat

SPLUNK = SenderFormat(
    name="splunk",
    title="Splunk",
    base={
        # A field the search names `hostname`, the event's own `host`, then the Common
        # Information Model's target and origin of a network event, `dest` and `src`.
        "hostname": [f"result.{name} | first" for name in ("hostname", "host", "dest", "src")],
        "severity": ["result.severity | first | severity", "result.urgency | first | severity"],
        "source": "=splunk",
        "detected_at": "result._time | first | time",
        "summary": ["result.summary | first | clean | truncate(1000)", "search_name"],
        "details": {
            "search_name": "search_name",
            "sid": "sid",
            "results_link": "results_link",
            "owner": "owner",
            "app": "app",
        },
    },
    by_name=("result.{field} | first",),
    # One search run may notify once per result row: the row is part of the identity.
    identity=("sid", "result"),
    # Splunk has no test button for its webhook action: an alert named TestAlert, the name of
    # Grafana's and Alertmanager's test alerts, is a test (docs/senders.md).
    tests=({"search_name": "TestAlert"},),
    # Splunk's numeric alert severities: 1 debug ... 6 fatal.
    severities={
        "1": "info",
        "2": "info",
        "3": "warning",
        "4": "critical",
        "5": "critical",
        "6": "critical",
    },
)
