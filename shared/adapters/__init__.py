"""Sender adapters: Alertmanager, Grafana, Datadog, Cloud Monitoring and Splunk payloads,
turned into canonical events by a mapping declared as data (`shared.adapters.mapping`)."""

from shared.adapters.adapt import Adapter, Candidate, Refusal, Skip
from shared.adapters.routes import SENDER_FORMATS, Routes, routes_for

__all__ = ["SENDER_FORMATS", "Adapter", "Candidate", "Refusal", "Routes", "Skip", "routes_for"]
