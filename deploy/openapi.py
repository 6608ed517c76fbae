"""python -m deploy openapi: one OpenAPI 3.1 document per function of the manifest.

Why one document per function: each function is its own Cloud Run service, at its own URL, with
its own authentication, and every one of them serves `POST /`. One document per function says
exactly that (`servers` is the function's URL, `paths` holds `/`), so clients, gateways and
schemathesis can use each one as it is. Each document carries `x-event-relay` (function, event
type, routing key, auth mode) for tools that want to tell them apart.

Each holds the event type's JSON Schema (pydantic's `model_json_schema`), the responses (202,
the 4xx problems, 503 with Retry-After) and the security scheme AUTH_MODE needs.

    python -m deploy openapi [--out build/openapi] [--only NAME ...] [--server-url URL]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy import REPO
from deploy.manifest import MANIFEST, Function, ManifestError, load_manifest
from shared.auth import GRAFANA_TIMESTAMP_HEADER, QUERY_PARAMETER
from shared.problems import MEDIA_TYPE, PROBLEM_TYPE_BASE
from shared.schemas import Event
from shared.vocabulary import AUTH_MODES, IDEMPOTENCY_KEY_PATTERN, AuthMode

OUT = REPO / "build" / "openapi"
# Cloud Run's deterministic URL; the project number is not in the manifest, so it is a variable.
DEFAULT_SERVER = "https://{service}-{project_number}.{region}.run.app"


@dataclass(frozen=True)
class FunctionApi:
    """What the document of one function is made of."""

    name: str
    model: type[Event]
    routing_key: str
    auth_mode: AuthMode | None  # None: AUTH_DISABLED (local development): no security requirement
    server_url: str
    server_variables: dict[str, str] | None = None
    timestamp_header: str | None = None  # grafana-hmac: AUTH_TIMESTAMP_HEADER, then required
    tolerance_seconds: int = 300


def function_document(api: FunctionApi) -> dict[str, Any]:
    """The OpenAPI 3.1 document of one function: pure, no I/O."""
    if api.auth_mode is not None and api.auth_mode not in AUTH_MODES:
        raise ValueError(f"unknown auth mode {api.auth_mode!r}")
    schemas = _event_schemas(api.model)
    schemas |= _problem_schemas()
    schemas["Accepted"] = {
        "type": "object",
        "required": ["id", "routing_key", "delivery"],
        "properties": {
            "id": {"type": "string", "description": "The event id: the AMQP message_id."},
            "routing_key": {"type": "string", "const": api.routing_key},
            "delivery": {
                "type": "string",
                "enum": ["confirmed", "spooled"],
                "description": "Who holds it: the broker (confirmed), or the spool while the "
                "broker is down (Pub/Sub acknowledged it; the drain republishes it).",
            },
        },
    }
    security_schemes, security, parameters = _security(api)
    parameters.append(
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "Becomes the event id and AMQP message_id, so a retry keeps its id.",
            "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
        }
    )
    server: dict[str, Any] = {"url": api.server_url}
    if api.server_variables:
        server["variables"] = {k: {"default": v} for k, v in api.server_variables.items()}
    operation: dict[str, Any] = {
        "operationId": api.name,
        "summary": f"Relay one {api.name} event to the broker",
        "description": (api.model.__doc__ or "").strip(),
        "parameters": parameters,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{_model_name(api)}"}}
            },
        },
        "responses": _responses(api),
        "security": security,
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"event-relay: {api.name}",
            "version": "1",
            "description": (
                f"POST one {api.name} event as JSON; a 202 means it is durably held (the broker "
                "confirmed it, or the spool did while the broker is down) under "
                f"routing key {api.routing_key}. Errors are RFC 9457 problem+json."
            ),
        },
        "servers": [server],
        "paths": {"/": {"post": operation}},
        "components": {"schemas": schemas, "securitySchemes": security_schemes},
        "x-event-relay": {
            "function": api.name,
            "event_type": api.name,
            "routing_key": api.routing_key,
            "auth_mode": api.auth_mode or "disabled",
        },
    }


def _model_name(api: FunctionApi) -> str:
    return api.model.__name__


def _event_schemas(model: type[Event]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions: dict[str, Any] = schema.pop("$defs", {})
    return {**definitions, model.__name__: schema}


def _problem_schemas() -> dict[str, Any]:
    problem = {
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string", "pattern": f"^{PROBLEM_TYPE_BASE}[a-z-]+$"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
        },
    }
    validation = {
        "allOf": [
            {"$ref": "#/components/schemas/Problem"},
            {
                "type": "object",
                "required": ["errors"],
                "properties": {
                    "errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["pointer", "type", "detail"],
                            "properties": {
                                "pointer": {"type": "string", "description": "JSON pointer"},
                                "type": {"type": "string"},
                                "detail": {"type": "string"},
                            },
                        },
                    }
                },
            },
        ]
    }
    return {"Problem": problem, "ValidationProblem": validation}


def _problem(description: str, schema: str = "Problem", **headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {MEDIA_TYPE: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }
    if headers:
        response["headers"] = {
            name: {"required": True, "description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return response


def _responses(api: FunctionApi) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "202": {
            "description": "The message is held: the broker confirmed it, or the spool did.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}},
        },
        "400": _problem(
            "Not one strict JSON object (duplicate keys, NaN, numbers over 40 digits, nesting "
            "over 32, not UTF-8), or a bad Idempotency-Key."
        ),
    }
    if api.auth_mode is not None:
        responses["401"] = _problem(
            "Missing or invalid credentials.", **{"WWW-Authenticate": "The challenge."}
        )
    responses |= {
        "404": _problem("A path other than /."),
        "413": _problem("The body is larger than MAX_BODY_BYTES."),
        "415": _problem("Not application/json (or +json) in UTF-8."),
        "422": _problem(
            "The event does not match the schema; `errors` names each field.",
            "ValidationProblem",
        ),
        "503": _problem(
            "Ours: the broker is unreachable, blocked, slow to confirm or refused the message, "
            "or a secret could not be read, and the spool (if any) did not take it. Retry.",
            **{"Retry-After": "Seconds to wait before retrying."},
        ),
    }
    return responses


def _header_key(name: str, description: str) -> dict[str, Any]:
    return {"type": "apiKey", "in": "header", "name": name, "description": description}


def _security(
    api: FunctionApi,
) -> tuple[dict[str, Any], list[dict[str, list[str]]], list[dict[str, Any]]]:
    """securitySchemes, the operation's security requirement, and extra header parameters."""
    window = f"within {api.tolerance_seconds} s of now"
    match api.auth_mode:
        case None:
            return {}, [], []
        case "bearer":
            scheme = {"type": "http", "scheme": "bearer", "description": "AUTH_SECRETS token."}
            return {"bearer": scheme}, [{"bearer": []}], []
        case "basic":
            scheme = {"type": "http", "scheme": "basic", "description": "AUTH_SECRETS user:pass."}
            return {"basic": scheme}, [{"basic": []}], []
        case "query-token":
            scheme = {
                "type": "apiKey",
                "in": "query",
                "name": QUERY_PARAMETER,
                "description": "For senders that cannot set headers; never logged.",
            }
            return {"queryToken": scheme}, [{"queryToken": []}], []
        case "standard-webhooks":
            schemes = {
                "webhookId": _header_key(
                    "webhook-id", "The delivery id: becomes the event id and AMQP message_id."
                ),
                "webhookTimestamp": _header_key("webhook-timestamp", f"Unix seconds, {window}."),
                "webhookSignature": _header_key(
                    "webhook-signature",
                    "Space-separated `v1,<base64 HMAC-SHA256 of id.timestamp.body>` made with a "
                    "whsec_ secret of AUTH_SECRETS (https://www.standardwebhooks.com).",
                ),
            }
            return schemes, [{key: [] for key in schemes}], []
        case "grafana-hmac":
            header = api.timestamp_header or GRAFANA_TIMESTAMP_HEADER
            signature = _header_key(
                "X-Grafana-Alerting-Signature",
                f"Hex HMAC-SHA256 of the body, or of `timestamp:body` when {header} is sent, "
                "with a secret of AUTH_SECRETS.",
            )
            if api.timestamp_header:  # configured: required, so part of the requirement
                schemes = {
                    "grafanaSignature": signature,
                    "grafanaTimestamp": _header_key(header, f"Unix seconds, {window}."),
                }
                return schemes, [{key: [] for key in schemes}], []
            optional = {
                "name": header,
                "in": "header",
                "required": False,
                "description": f"Unix seconds, {window}; when sent, it is signed too.",
                "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
            }
            return {"grafanaSignature": signature}, [{"grafanaSignature": []}], [optional]
    raise ValueError(f"unknown auth mode {api.auth_mode!r}")  # pragma: no cover


def documents(
    functions: list[Function], *, server_url: str | None = None
) -> dict[str, dict[str, Any]]:
    """The document of each of the manifest's `functions`, by function name."""
    result = {}
    for fn in functions:
        variables = {
            "service": fn.name.replace("_", "-"),
            "project_number": "PROJECT_NUMBER",
            "region": fn.region or "REGION",
        }
        api = FunctionApi(
            name=fn.name,
            model=fn.model,
            routing_key=fn.routing_key,
            auth_mode=fn.auth.mode if fn.auth else None,
            server_url=(server_url or DEFAULT_SERVER).replace("{name}", fn.name),
            server_variables=None if server_url else variables,
            timestamp_header=fn.auth.timestamp_header if fn.auth else None,
            tolerance_seconds=(fn.auth.tolerance_seconds if fn.auth else None) or 300,
        )
        result[fn.name] = function_document(api)
    return result


def write(functions: list[Function], out: Path = OUT, server_url: str | None = None) -> int:
    """Write <out>/<name>.openapi.json for each function; the exit status."""
    try:
        docs = documents(functions, server_url=server_url)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    for name, document in docs.items():
        path = out / f"{name}.openapi.json"
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the `openapi` command (python -m deploy adds --manifest and --only)."""
    parser.add_argument("--out", type=Path, default=OUT, help="folder (default: %(default)s)")
    parser.add_argument("--server-url", help="every function's URL; {name} is replaced")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy openapi", description=__doc__)
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--only", action="append", metavar="NAME")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        functions = load_manifest(args.manifest)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.only:
        functions = [fn for fn in functions if fn.name in args.only]
    return write(functions, args.out, args.server_url)


if __name__ == "__main__":
    sys.exit(main())
