"""Default mappings per event type and sender, for fields whose sender name differs from ours.

A field with no mapping here (nor in SENDER_MAPPINGS) is looked for under its own name, where
the sender keeps such values (`SenderFormat.by_name`), converted to the field's type.
"""

from __future__ import annotations

from shared.adapters.datadog import MESSAGES, TITLES
from shared.adapters.format import Spec

Mappings = dict[str, dict[str, Spec]]  # sender → field → expression
TEXT = "clean | truncate(1000)"


def _alert(*names: str, then: str = "", grafana: bool = False) -> list[str]:
    """Alertmanager and Grafana: each name in the alert's labels, then its annotations."""
    places = ("labels", "annotations", "values") if grafana else ("labels", "annotations")
    pipe = f" | {then}" if then else ""
    return [f"alerts[].{place}.{name}{pipe}" for name in names for place in places]


def _result(*names: str, then: str = "") -> list[str]:
    """Splunk: each name in the result row (a multivalue field gives its first value)."""
    pipe = f" | {then}" if then else ""
    return [f"result.{name} | first{pipe}" for name in names]


def _label_based(fields: dict[str, tuple[tuple[str, ...], str]]) -> Mappings:
    return {
        "alertmanager": {f: _alert(*names, then=then) for f, (names, then) in fields.items()},
        "grafana": {
            f: _alert(*names, then=then, grafana=True) for f, (names, then) in fields.items()
        },
    }


_REASON = (
    "alerts[].annotations.reason",
    f"alerts[].annotations.summary | {TEXT}",
    f"alerts[].annotations.description | {TEXT}",
    f"alerts[].labels.alertname | {TEXT}",
)

DEFAULTS: dict[str, Mappings] = {
    "vm_isolate": {
        "alertmanager": {"reason": list(_REASON)},
        "grafana": {"reason": list(_REASON)},
        "datadog": {"reason": [f"{key} | {TEXT}" for key in ("reason", *TITLES, *MESSAGES)]},
        "cloud-monitoring": {
            "reason": [
                f"incident.policy_user_labels.reason | {TEXT}",
                f"incident.summary | {TEXT}",
                f"incident.policy_name | {TEXT}",
            ]
        },
        "splunk": {"reason": [*_result("reason", then=TEXT), f"search_name | {TEXT}"]},
    },
    "disk_space_low": {
        # node_exporter's filesystem metrics carry `mountpoint`.
        **_label_based(
            {
                "mount_point": (("mount_point", "mountpoint"), ""),
                "used_percent": (("used_percent",), "float"),
                "free_bytes": (("free_bytes",), "int"),
            }
        ),
        "cloud-monitoring": {
            "used_percent": [
                "incident.policy_user_labels.used_percent | float",
                "incident.observed_value | float",
            ]
        },
        # The Splunk Add-on for Unix and Linux `df` source: MountedOn, UsePct, Avail.
        "splunk": {
            "mount_point": _result("mount_point", "MountedOn"),
            "used_percent": _result("used_percent", "UsePct", then="float"),
        },
    },
    "service_down": {
        # node_exporter's systemd collector and windows_exporter's service collector: `name`.
        **_label_based(
            {
                "service_name": (("service_name", "name", "unit", "service"), ""),
                "platform": (("platform", "os"), "lower"),
            }
        ),
        "datadog": {
            "service_name": ["service_name", "scope | tag(unit)", "scope | tag(windows_service)"],
            "platform": ["platform | lower", "scope | tag(platform) | lower"],
        },
        "splunk": {
            "service_name": _result("service_name", "service", "name"),
            "platform": _result("platform", "os", then="lower"),
        },
    },
    "login_bruteforce": {
        **_label_based(
            {
                "source_ip": (("source_ip", "src_ip", "client_ip"), ""),
                "username": (("username", "user"), ""),
                "failed_attempts": (("failed_attempts",), "int"),
                "window_seconds": (("window_seconds",), "int"),
            }
        ),
        # Splunk's Common Information Model: src, user; `stats count` gives count.
        "splunk": {
            "source_ip": _result("source_ip", "src_ip", "src"),
            "username": _result("username", "user"),
            "failed_attempts": _result("failed_attempts", "count", then="int"),
        },
    },
}


def defaults_for(event_type: str, sender: str) -> dict[str, Spec]:
    return dict(DEFAULTS.get(event_type, {}).get(sender, {}))
