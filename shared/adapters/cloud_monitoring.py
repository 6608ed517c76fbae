"""Google Cloud Monitoring's webhook notification channel (schema version "1.2").

https://cloud.google.com/monitoring/support/notification-options#schema-webhooks
"""

from __future__ import annotations

from shared.adapters.format import SenderFormat

INCIDENT = "incident"

CLOUD_MONITORING = SenderFormat(
    name="cloud-monitoring",
    title="Google Cloud Monitoring",
    base={
        # The VM's name (resource_display_name, a compute metric's instance_name label), the
        # host of an uptime check's resource, then resource_name, "<project> <name>" on some
        # resources but "<project> VM Instance labels {...}" on others; instance_id is numeric,
        # a last resort.
        "hostname": [
            f"{INCIDENT}.resource_display_name",
            f"{INCIDENT}.metric.labels.instance_name",
            f"{INCIDENT}.resource.labels.instance_name",
            f"{INCIDENT}.metric.labels.host",
            f"{INCIDENT}.resource.labels.host",
            f"{INCIDENT}.resource_name | last_word",
            f"{INCIDENT}.resource.labels.instance_id",
        ],
        "severity": [
            f"{INCIDENT}.severity | severity",
            f"{INCIDENT}.policy_user_labels.severity | severity",
        ],
        "source": "=cloud-monitoring",
        "detected_at": f"{INCIDENT}.started_at | time",
        "summary": [f"{INCIDENT}.summary | clean | truncate(1000)", f"{INCIDENT}.policy_name"],
        "details": {
            "incident_id": f"{INCIDENT}.incident_id",
            "state": f"{INCIDENT}.state",
            "url": f"{INCIDENT}.url",
            "policy_name": f"{INCIDENT}.policy_name",
            "condition_name": f"{INCIDENT}.condition_name",
            "resource_type": f"{INCIDENT}.resource.type",
            "resource_labels": f"{INCIDENT}.resource.labels",
            "observed_value": f"{INCIDENT}.observed_value",
            "threshold_value": f"{INCIDENT}.threshold_value",
        },
    },
    by_name=(
        f"{INCIDENT}.policy_user_labels.{{field}}",
        f"{INCIDENT}.metadata.user_labels.{{field}}",
        f"{INCIDENT}.metric.labels.{{field}}",
        f"{INCIDENT}.resource.labels.{{field}}",
    ),
    identity=(f"{INCIDENT}.incident_id", f"{INCIDENT}.state", f"{INCIDENT}.started_at"),
    status=f"{INCIDENT}.state | lower",
    resolved=frozenset({"closed"}),
    # A channel's "Test connection" posts a sample incident with `"version": "test"` (quoted by
    # target/goalert's gke integration and cloudforet-io's google-monitoring webhook plugin).
    tests=({"version": "test"},),
    severities={"no severity": "info"},
)
