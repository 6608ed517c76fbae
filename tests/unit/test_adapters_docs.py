"""docs/senders.md's curl lines: each posts a sample payload that exists, to a function and
sender path that take it, with the answer the page says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.unit.test_adapters_pipeline import FakePublisher, client

ROOT = Path(__file__).parent.parent.parent
PAGE = (ROOT / "docs" / "senders.md").read_text()
# `curl … "$VM_ISOLATE_URL/alertmanager…" … --data-binary @tests/events/senders/<file>.json`
CURL = re.compile(
    r'curl [^\n]*"\$(?P<function>[A-Z_]+)_URL/(?P<sender>[a-z-]+)[^"]*"'
    r".*?--data-binary @(?P<file>tests/events/senders/[\w.]+\.json)",
    re.DOTALL,
)
CURLS = [m.groupdict() for m in CURL.finditer(PAGE)]


def test_the_page_gives_a_curl_line_for_every_sender() -> None:
    assert {c["sender"] for c in CURLS} == {
        "alertmanager",
        "grafana",
        "datadog",
        "cloud-monitoring",
        "splunk",
    }


@pytest.mark.parametrize("curl", CURLS, ids=[c["file"].rsplit("/", 1)[1] for c in CURLS])
def test_each_curl_line_posts_a_payload_its_function_takes(curl: dict[str, str]) -> None:
    payload = json.loads((ROOT / curl["file"]).read_text())
    publisher = FakePublisher()

    response = client(publisher, curl["function"].lower()).post(f"/{curl['sender']}", json=payload)

    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["refused"] == []
    if curl["file"].endswith("_test.json"):
        assert [s["reason"] for s in answer["skipped"]] == ["test-notification"]
        assert publisher.published == []
    else:
        assert publisher.published


def test_every_sample_the_page_names_exists() -> None:
    named = set(re.findall(r"tests/events/senders/[\w.]+\.(?:json|md)", PAGE))

    assert named
    assert [n for n in sorted(named) if not (ROOT / n).is_file()] == []
