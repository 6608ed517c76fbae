"""Every sender's payload format, by name; shared.routes builds a function's adapters from them."""

from __future__ import annotations

from collections.abc import Mapping

from shared.adapters.alertmanager import ALERTMANAGER
from shared.adapters.cloud_monitoring import CLOUD_MONITORING
from shared.adapters.datadog import DATADOG
from shared.adapters.format import SenderFormat
from shared.adapters.grafana import GRAFANA
from shared.adapters.splunk import SPLUNK

SENDER_FORMATS: Mapping[str, SenderFormat] = {
    f.name: f for f in (ALERTMANAGER, GRAFANA, DATADOG, CLOUD_MONITORING, SPLUNK)
}
