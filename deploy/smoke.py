"""`python -m deploy smoke`: one signed test alert per deployed function, which must answer 202.

The alert is the function's sample event (tests/events/<name>.json) cut down to its required
fields and marked as a test: host `smoke-test.invalid` (a name that cannot resolve), source
`event-relay-smoke-test`, severity info. It does reach the event's queue: a consumer should
ignore that source. The credentials are the first of AUTH_SECRETS, read from the operator's file
(--auth-file) or else from Secret Manager with `gcloud secrets versions access`; the request is
authenticated the way the function's auth mode wants. Nothing secret is printed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from deploy import EVENTS
from deploy.gcloud import url_command
from deploy.manifest import Function
from deploy.secret_files import secret_id
from deploy.steps import Command, command
from shared.auth import GRAFANA_SIGNATURE_HEADER, GRAFANA_TIMESTAMP_HEADER, QUERY_PARAMETER

SOURCE = "event-relay-smoke-test"
HOST = "smoke-test.invalid"  # RFC 2606: never a real host
SUMMARY = "event-relay smoke test after a deployment: not an incident, do not act on it"


class SmokeError(RuntimeError):
    """The smoke test cannot be sent: no URL, no credentials."""


def smoke_event(fn: Function) -> bytes:
    """The test alert's JSON body for fn, checked against the function's own model."""
    model = fn.model
    sample: dict[str, Any] = json.loads((EVENTS / f"{fn.name}.json").read_text())
    fields = model.model_fields
    event = {k: v for k, v in sample.items() if k in fields and fields[k].is_required()}
    event |= {
        "hostname": HOST,
        "source": SOURCE,
        "severity": "info",
        "summary": SUMMARY,
        "detected_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    body = json.dumps(event).encode()
    model.model_validate_json(body)  # a sample the model refuses is our bug, not the function's
    return body


def secret_command(fn: Function) -> Command:
    """`gcloud secrets versions access` for the function's AUTH_SECRETS (its value on stdout)."""
    ref = fn.secrets["AUTH_SECRETS"]
    project, name = secret_id(ref.secret, fn)
    return command(
        "gcloud", "secrets", "versions", "access", ref.version, f"--secret={name}",
        *([f"--project={project}"] if project else []),
    )  # fmt: skip


def first_secret(raw: str) -> str:
    """The first of AUTH_SECRETS' values (commas or newlines separate them)."""
    for value in re.split(r"[,\n]", raw):
        if value.strip():
            return value.strip()
    raise SmokeError("AUTH_SECRETS holds no secret")


def signed(
    fn: Function, secret: str, body: bytes, event_id: str
) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, query) that authenticate `body` the way fn's auth mode checks it."""
    headers = {"content-type": "application/json", "idempotency-key": event_id}
    mode = fn.auth.mode if fn.auth else "bearer"
    if mode == "bearer":
        headers["authorization"] = f"Bearer {secret}"
    elif mode == "basic":
        headers["authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
    elif mode == "query-token":
        return headers, {QUERY_PARAMETER: secret}
    elif mode == "standard-webhooks":
        from standardwebhooks import Webhook  # the reference implementation of the scheme

        now = datetime.now(UTC)
        headers["webhook-id"] = event_id
        headers["webhook-timestamp"] = str(int(now.timestamp()))
        headers["webhook-signature"] = Webhook(secret).sign(event_id, now, body.decode())
    elif mode == "grafana-hmac":  # Grafana's contact point: hex HMAC-SHA256 of "timestamp:body"
        stamp = str(int(time.time()))
        digest = hmac.new(secret.encode(), stamp.encode() + b":" + body, hashlib.sha256)
        headers[GRAFANA_SIGNATURE_HEADER] = digest.hexdigest()
        headers[(fn.auth and fn.auth.timestamp_header) or GRAFANA_TIMESTAMP_HEADER] = stamp
    else:
        raise SmokeError(f"auth mode {mode!r} is not known to the smoke test")
    return headers, {}


def smoke(fn: Function, *, url: str | None = None, auth_file: Path | None = None) -> bool:
    """Send fn one signed test alert; whether it answered 202. Prints one line, no secret."""
    url = url or _deployed_url(fn)
    raw = auth_file.read_text() if auth_file else _read(secret_command(fn), "AUTH_SECRETS")
    body = smoke_event(fn)
    event_id = f"smoke-{uuid.uuid4()}"
    headers, query = signed(fn, first_secret(raw), body, event_id)
    try:
        response = httpx.post(url, content=body, headers=headers, params=query, timeout=30)
    except httpx.HTTPError as exc:
        print(f"{fn.name}: FAILED, no answer from {url}: {exc}")
        return False
    if response.status_code == 202:
        print(f"{fn.name}: 202 from {url}, event {event_id} published to {fn.routing_key}")
        return True
    print(f"{fn.name}: FAILED, {response.status_code} from {url}: {_problem(response)}")
    return False


def run(functions: Sequence[Function], *, url: str | None, auth_file: Path | None) -> int:
    if url and len(functions) != 1:
        raise SmokeError("--url is one function's URL: add --only NAME")
    passed = [smoke(fn, url=url, auth_file=auth_file) for fn in functions]
    return 0 if all(passed) else 1


def _deployed_url(fn: Function) -> str:
    url = _read(url_command(fn), f"the URL of {fn.name}").strip()
    if not url:
        raise SmokeError(f"{fn.name} has no URL: is it deployed in {fn.region}?")
    return url


def _read(cmd: Command, what: str) -> str:
    done = cmd.run(capture=True)
    if done.returncode:
        error = done.stderr.strip().splitlines()
        raise SmokeError(f"cannot read {what}: {cmd}: {error[0] if error else done.returncode}")
    return done.stdout


def _problem(response: httpx.Response) -> str:
    """The problem's title and detail (our functions answer problem+json), else the status."""
    try:
        problem = response.json()
    except ValueError:
        return response.reason_phrase
    if not isinstance(problem, dict):
        return response.reason_phrase
    return ": ".join(str(problem[k]) for k in ("title", "detail") if problem.get(k))
