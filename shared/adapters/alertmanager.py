"""Prometheus Alertmanager's webhook (version "4"): a group of alerts per request.

https://prometheus.io/docs/alerting/latest/configuration/#webhook_config
"""

from __future__ import annotations

from shared.adapters.format import SenderFormat, Spec

A = "alerts[]"

# Alertmanager and Grafana share these: each alert's labels and annotations.
LABEL_BASED: dict[str, Spec] = {
    "hostname": [f"{A}.labels.hostname", f"{A}.labels.instance | strip_port", f"{A}.labels.host"],
    "severity": f"{A}.labels.severity | severity",
    "detected_at": f"{A}.startsAt | time",
    "summary": [
        f"{A}.annotations.summary | clean | truncate(1000)",
        f"{A}.annotations.description | clean | truncate(1000)",
        f"{A}.labels.alertname | clean | truncate(1000)",
    ],
    "details": {
        "alertname": f"{A}.labels.alertname",
        "status": f"{A}.status",
        "labels": f"{A}.labels",
        "annotations": f"{A}.annotations",
        "starts_at": f"{A}.startsAt",
        "fingerprint": f"{A}.fingerprint",
        "generator_url": f"{A}.generatorURL",
    },
}

ALERTMANAGER = SenderFormat(
    name="alertmanager",
    title="Prometheus Alertmanager",
    base={**LABEL_BASED, "source": "=alertmanager"},
    by_name=(f"{A}.labels.{{field}}", f"{A}.annotations.{{field}}"),
    identity=(f"{A}.fingerprint", f"{A}.startsAt", f"{A}.status"),
    batch="alerts",
    status=f"{A}.status",
    resolved=frozenset({"resolved"}),
)
