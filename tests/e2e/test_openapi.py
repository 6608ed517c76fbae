"""The OpenAPI documents of `python -m deploy openapi`, and schemathesis against the served
functions: with valid credentials and without, no request may get a 5xx, and every answer must
match the document (status, content type, headers, body schema)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from deploy import REPO
from deploy.broker import BrokerNode
from deploy.function_process import FunctionProcess
from deploy.manifest import Function, load_manifest
from deploy.openapi import FunctionApi, documents, function_document
from shared.vocabulary import AuthMode
from tests.e2e.conftest import Route, function_env, sample_event

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
AUTH_HEADERS = {
    "authorization",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-grafana-alerting-signature",
    "x-grafana-alerting-signature-timestamp",
}
TOKEN, PAIR, GRAFANA = "openapi-token-51c2", "relay:openapi-pass-7d", "openapi-grafana-e3"
WHSEC = "whsec_" + base64.b64encode(b"openapi-standard-webhooks-01").decode()
SECRETS = {
    "bearer": TOKEN,
    "basic": PAIR,
    "query-token": TOKEN,
    "standard-webhooks": WHSEC,
    "grafana-hmac": GRAFANA,
}
FUNCTIONS = {fn.name: fn for fn in load_manifest()}
# Every function in its manifest mode (bearer), and vm_isolate in each other mode.
TARGETS = [(name, fn.auth.mode if fn.auth else "bearer") for name, fn in FUNCTIONS.items()] + [
    ("vm_isolate", mode) for mode in SECRETS if mode != "bearer"
]


# --- the document --------------------------------------------------------------------


def test_the_cli_writes_one_valid_document_per_function(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deploy", "openapi", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    written = {p.name.removesuffix(".openapi.json") for p in tmp_path.glob("*.openapi.json")}
    assert written == set(FUNCTIONS)
    for name in written:
        document = json.loads((tmp_path / f"{name}.openapi.json").read_text())
        assert document["openapi"] == "3.1.0"
        assert document["x-event-relay"]["routing_key"] == FUNCTIONS[name].routing_key
        schemathesis.openapi.from_dict(document)  # loads: the document is well formed


def test_each_document_holds_its_event_schema_and_responses() -> None:
    for name, document in documents(list(FUNCTIONS.values())).items():
        model = FUNCTIONS[name].model
        operation = document["paths"]["/"]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert schema["additionalProperties"] is False
        assert set(schema["properties"]) == set(model.model_fields)
        assert set(schema["required"]) == {
            n for n, f in model.model_fields.items() if f.is_required()
        }
        assert set(operation["responses"]) == {
            "202", "400", "401", "404", "413", "415", "422", "503"
        }  # fmt: skip
        assert "Retry-After" in operation["responses"]["503"]["headers"]
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]


@pytest.mark.parametrize(
    ("mode", "schemes"),
    [
        ("bearer", {"bearer": {"type": "http", "scheme": "bearer"}}),
        ("basic", {"basic": {"type": "http", "scheme": "basic"}}),
        ("query-token", {"queryToken": {"type": "apiKey", "in": "query", "name": "token"}}),
        (
            "standard-webhooks",
            {
                "webhookId": {"type": "apiKey", "in": "header", "name": "webhook-id"},
                "webhookTimestamp": {"type": "apiKey", "in": "header", "name": "webhook-timestamp"},
                "webhookSignature": {"type": "apiKey", "in": "header", "name": "webhook-signature"},
            },
        ),
        (
            "grafana-hmac",
            {
                "grafanaSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Grafana-Alerting-Signature",
                }
            },
        ),
    ],
)
def test_the_security_scheme_follows_the_auth_mode(
    mode: str, schemes: dict[str, dict[str, str]]
) -> None:
    document = function_document(api_for("vm_isolate", mode, "http://127.0.0.1:1/"))

    declared = document["components"]["securitySchemes"]
    assert {k: {f: v[f] for f in schemes[k]} for k, v in declared.items()} == schemes
    # All of a mode's schemes are one requirement: every header is needed at once.
    assert document["paths"]["/"]["post"]["security"] == [{key: [] for key in schemes}]


def test_a_function_without_auth_has_no_security_and_no_401() -> None:
    document = function_document(api_for("vm_isolate", None, "http://127.0.0.1:1/"))

    assert document["paths"]["/"]["post"]["security"] == []
    assert "401" not in document["paths"]["/"]["post"]["responses"]


def api_for(name: str, mode: str | None, url: str) -> FunctionApi:
    fn: Function = FUNCTIONS[name]
    return FunctionApi(
        name=name,
        model=fn.model,
        routing_key=fn.routing_key,
        auth_mode=cast("AuthMode | None", mode),  # the parameters are plain strings
        server_url=url,
    )


# --- schemathesis against the served functions ----------------------------------------


def authenticate(mode: str, request: dict[str, Any], body: bytes) -> None:
    """Put the right credentials for `mode` on `request` (httpx keyword arguments)."""
    headers, secret = request["headers"], SECRETS[mode]
    if mode == "bearer":
        headers["authorization"] = f"Bearer {secret}"
    elif mode == "basic":
        headers["authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
    elif mode == "query-token":
        request["params"] = {**request.get("params", {}), "token": secret}
    elif mode == "standard-webhooks":
        msg_id, now = f"msg_{time.time_ns()}", datetime.now(UTC)
        headers["webhook-id"] = msg_id
        headers["webhook-timestamp"] = str(int(now.timestamp()))
        # By hand: the reference library signs text only, and a generated body may not be UTF-8.
        signed = f"{msg_id}.{int(now.timestamp())}.".encode() + body
        key = base64.b64decode(secret.removeprefix("whsec_"))
        signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        headers["webhook-signature"] = f"v1,{signature}"
    elif mode == "grafana-hmac":
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers["x-grafana-alerting-signature"] = digest


def as_httpx(case: schemathesis.Case[Any], base_url: str) -> tuple[dict[str, Any], bytes]:
    """The case as httpx keyword arguments, its body serialized once (so it can be signed),
    and the credentials schemathesis made up removed."""
    kwargs = case.as_transport_kwargs(base_url=base_url)
    if "json" in kwargs:
        body = json.dumps(kwargs.pop("json")).encode()
    else:
        data = kwargs.pop("data", b"")
        body = data.encode() if isinstance(data, str) else bytes(data or b"")
    headers = {k: v for k, v in kwargs["headers"].items() if k.lower() not in AUTH_HEADERS}
    params = {k: v for k, v in (kwargs.get("params") or {}).items() if k != "token"}
    request = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": headers,
        "params": params,
    }
    return request, body


@pytest.fixture(scope="module", params=TARGETS, ids=[f"{n}-{m}" for n, m in TARGETS])
def served(
    request: pytest.FixtureRequest,
    broker: BrokerNode,
    make_route: Callable[[str], Route],
    start_function: Callable[..., FunctionProcess],
) -> Iterator[tuple[str, str, FunctionProcess, Route]]:
    name, mode = request.param
    route = make_route("#")
    env = function_env(broker, route.exchange, AUTH_MODE=mode, AUTH_SECRETS=SECRETS[mode])
    del env["AUTH_DISABLED"]
    server = start_function(name, env)
    yield name, mode, server, route
    server.stop()


def test_schemathesis_finds_no_5xx_and_no_departure_from_the_document(
    served: tuple[str, str, FunctionProcess, Route],
) -> None:
    name, mode, server, route = served
    route.messages()
    document = function_document(api_for(name, mode, server.url))
    operation = schemathesis.openapi.from_dict(document)["/"]["POST"]
    base_url = server.url.rstrip("/")
    statuses: Counter[tuple[bool, int]] = Counter()
    cases = st.tuples(
        st.booleans(),  # authenticated?
        operation.as_strategy(GenerationMode.POSITIVE)
        | operation.as_strategy(GenerationMode.NEGATIVE)
        # The sample event with generated headers: reaches the broker and the 202's schema.
        | operation.as_strategy(GenerationMode.POSITIVE, body=sample_event(name)),
    )

    with httpx.Client(timeout=30) as client:

        @settings(
            max_examples=60,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases)
        def exchange(case: tuple[bool, schemathesis.Case[Any]]) -> None:
            authenticated, generated = case
            request, body = as_httpx(generated, base_url)
            if authenticated:
                authenticate(mode, request, body)
            response = client.request(**request, content=body)
            statuses[authenticated, response.status_code] += 1
            generated.validate_response(response, checks=CHECKS)
            if not authenticated:
                assert response.status_code == 401

        exchange()

    assert not [status for _, status in statuses if status >= 500]
    assert (True, 202) in statuses, statuses  # authenticated requests reached the broker
    assert (False, 401) in statuses, statuses
    assert route.count() == sum(n for (_, status), n in statuses.items() if status == 202)
