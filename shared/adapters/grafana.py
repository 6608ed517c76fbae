"""Grafana Alerting's webhook contact point (version "1"): Alertmanager's shape, plus `values`,
`valueString` and links per alert.

https://grafana.com/docs/grafana/latest/alerting/configure-notifications/manage-contact-points/integrations/webhook-notifier/
"""

from __future__ import annotations

from shared.adapters.alertmanager import LABEL_BASED, TEST_ALERT, A
from shared.adapters.format import SenderFormat

GRAFANA = SenderFormat(
    name="grafana",
    title="Grafana Alerting",
    base={
        **LABEL_BASED,
        "source": "=grafana",
        "details": {
            **LABEL_BASED["details"],
            "values": f"{A}.values",
            "value_string": f"{A}.valueString | truncate(1000)",
            "dashboard_url": f"{A}.dashboardURL",
            "panel_url": f"{A}.panelURL",
        },
    },
    by_name=(f"{A}.labels.{{field}}", f"{A}.annotations.{{field}}", f"{A}.values.{{field}}"),
    identity=(f"{A}.fingerprint", f"{A}.startsAt", f"{A}.status"),
    batch="alerts",
    status=f"{A}.status",
    resolved=frozenset({"resolved"}),
    # The contact point's Test button also sets its own group key, "<integration>-<fingerprint>-
    # <unix seconds>" (notify/test_receivers.go), where a rule's group key starts with "{": so a
    # custom test that renames its alert is still a test.
    tests=(*TEST_ALERT, {"groupKey": r"[^{].*-[0-9a-f]{16}-[0-9]+"}),
)
