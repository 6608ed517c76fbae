"""Deployment: the manifest, staging, gcloud, topology, the local run and its private broker."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the repository root
EVENTS = REPO / "tests" / "events"  # one sample payload per event type: <name>.json
