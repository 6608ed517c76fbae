"""Prometheus Alertmanager's webhook (version "4"): a group of alerts per request.

https://prometheus.io/docs/alerting/latest/configuration/#webhook_config
"""

from __future__ import annotations

from shared.adapters.format import SenderFormat, Spec

A = "alerts[]"

# Where exporters and rule authors put a host: a `hostname` or `host` label of the rule's own,
# node_exporter's `nodename` (node_uname_info), then the scrape target `instance`; labels
# first, then annotations. `host` and `instance` often carry a port or a URL: taken off.
HOST_PLACES = ("hostname", "host | strip_port", "nodename", "instance | strip_port")

# Alertmanager and Grafana share these: each alert's labels and annotations.
LABEL_BASED: dict[str, Spec] = {
    "hostname": [
        f"{A}.{kind}.{place}" for kind in ("labels", "annotations") for place in HOST_PLACES
    ],
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

# The test alert of Grafana's contact points (grafana/alerting, notify/receivers.go
# newTestAlert: alertname TestAlert, instance Grafana, summary "Notification test"), of Mimir's
# receiver test (the same code) and of the proposed `amtool test-receivers` (instance
# Alertmanager); an operator's `amtool alert add TestAlert ...` follows the same name.
TEST_ALERT = ({f"{A}.labels.alertname": "TestAlert"},)

ALERTMANAGER = SenderFormat(
    name="alertmanager",
    title="Prometheus Alertmanager",
    base={**LABEL_BASED, "source": "=alertmanager"},
    by_name=(f"{A}.labels.{{field}}", f"{A}.annotations.{{field}}"),
    identity=(f"{A}.fingerprint", f"{A}.startsAt", f"{A}.status"),
    batch="alerts",
    status=f"{A}.status",
    resolved=frozenset({"resolved"}),
    tests=TEST_ALERT,
)
