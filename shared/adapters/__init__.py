"""Sender adapters: Alertmanager, Grafana, Datadog, Cloud Monitoring and Splunk payloads,
turned into canonical events by a mapping declared as data (`shared.adapters.mapping`).
A function builds them through `shared.routes`, as its sender paths first need them."""

from shared.adapters.adapt import Adapter, Candidate, Refusal, Skip
from shared.adapters.formats import SENDER_FORMATS

__all__ = ["SENDER_FORMATS", "Adapter", "Candidate", "Refusal", "Skip"]
