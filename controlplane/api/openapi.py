"""The OpenAPI document, generated from the route table so it cannot drift from it.

Every (path, method) of the route table has an entry in OPERATIONS: its parameters with types
and bounds (the same bounds the handlers enforce, from inputs.py), its request body, its
success response and the errors it can answer, all with one error schema. A test fails when a
route has no entry, and schemathesis checks the live server against this document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import BaseRoute, Route

import controlplane
from controlplane import rollouts
from controlplane.api.inputs import (
    AUDIT_LIMIT_MAX,
    HISTORY_LIMIT_MAX,
    JOIN_TOKEN_LIMIT_MAX,
    MAX_INT,
)
from controlplane.api.longpoll import DEFAULT_WAIT_SECONDS, MAX_WAIT_SECONDS
from controlplane.domain import JOIN_TOKEN_ID, MAX_JOIN_TOKEN_TTL, SCOPES
from controlplane.fleet import SERVER_PROGRESS, SERVER_STATES
from controlplane.reported_keys import KEY_KINDS, MAX_KEYS_PER_REPORT
from controlplane.services.rollouts import MAX_REASON
from controlplane.services.servers import HEALTH_VALUES, MAX_KEY_MANAGER_FIELD, MAX_PROVIDER_REF

__all__ = ["OPERATIONS", "Operation", "document", "undescribed"]

PUBLIC = {("/healthz", "get"), ("/readyz", "get"), ("/v1/trust-domains/{td_id}/bundle", "get")}

# -- schemas ----------------------------------------------------------------------------------

STRING: dict[str, Any] = {"type": "string"}
NULLABLE_STRING = {"type": ["string", "null"]}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
VERSION: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": MAX_INT}
NULLABLE_VERSION = {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_INT}
BOOLEAN: dict[str, Any] = {"type": "boolean"}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {
            "type": "string",
            "description": "A stable code: bad_request, input_rejected, unauthenticated, "
            "server_deregistered, forbidden, not_found, has_children, already_exists, "
            "version_conflict, rollout_conflict, validation_failed, unavailable, internal.",
        },
        "phase": {"type": "string", "description": "rollout_conflict: the rollout's phase"},
        "message": {"type": "string", "description": "One readable line."},
        "pointer": {
            "type": "string",
            "description": "bad_request on a status report: JSON Pointer (RFC 6901) of the bad value",
        },
        "expected_version": {**VERSION, "description": "version_conflict: the version sent"},
        "current_version": {**VERSION, "description": "version_conflict: the stored version"},
        "holders": {
            "type": "array",
            "description": "has_children: what still holds the object",
            "items": {
                "type": "object",
                "required": ["kind", "id"],
                "properties": {
                    "kind": {"enum": ["server", "cluster", "deployment"]},
                    "id": {"type": "string"},
                    "name": {"type": "string"},
                    "cluster_id": {"type": ["string", "null"]},
                    "last_contact_at": {"type": "string", "format": "date-time"},
                },
            },
        },
        "errors": {
            "type": "array",
            "description": "validation_failed: every issue of every document",
            "items": {
                "type": "object",
                "required": ["section", "pointer", "reason"],
                "properties": {
                    "section": STRING,
                    "pointer": {"type": "string", "description": "JSON Pointer (RFC 6901)"},
                    "reason": STRING,
                    "document": {"type": ["integer", "null"]},
                },
            },
        },
    },
}


def _object(required: Iterable[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


def _items(item: dict[str, Any]) -> dict[str, Any]:
    return _object(["items"], items={"type": "array", "items": item})


TRUST_DOMAIN = _object(["id", "name", "created_at"], id=STRING, name=STRING, created_at=TIME)
DEPLOYMENT = _object(
    ["id", "name", "trust_domain_id", "created_at"],
    id=STRING,
    name=STRING,
    trust_domain_id=STRING,
    trust_domain_name=STRING,
    created_at=TIME,
)
CLUSTER = _object(
    ["id", "name", "trust_domain_deployment_id", "created_at"],
    id=STRING,
    name=STRING,
    trust_domain_deployment_id=STRING,
    created_at=TIME,
)
SECTION = _object(
    ["schema", "yaml", "document"], schema=STRING, yaml=STRING, document={"type": "object"}
)
CONFIG = _object(
    ["scope", "id", "version", "sections"],
    scope={"enum": list(SCOPES)},
    id=STRING,
    version=VERSION,
    updated_at={"type": ["string", "null"], "format": "date-time"},
    actor=NULLABLE_STRING,
    sections={"type": "object", "additionalProperties": SECTION},
)
WRITE_RESULT = _object(
    ["version", "previous_version", "changed", "validate_only", "sections"],
    version=VERSION,
    previous_version=VERSION,
    changed=BOOLEAN,
    validate_only=BOOLEAN,
    sections={"type": "array", "items": STRING},
)
HISTORY = _object(
    ["items", "next_before"],
    items={
        "type": "array",
        "items": _object(
            ["version", "actor", "created_at", "action", "sections"],
            version=VERSION,
            actor=STRING,
            created_at=TIME,
            action=STRING,
            sections={"type": "array", "items": STRING},
        ),
    },
    next_before=NULLABLE_VERSION,
)
DIFF = _object(
    ["from", "to", "sections"],
    **{
        "from": VERSION,
        "to": VERSION,
        "sections": {
            "type": "array",
            "items": _object(
                ["section", "change"],
                section=STRING,
                change={"enum": ["added", "removed", "changed", "unchanged"]},
                old_yaml=NULLABLE_STRING,
                new_yaml=NULLABLE_STRING,
            ),
        },
    },
)
EFFECTIVE = _object(
    ["version", "sections"],
    version=VERSION,
    sections={
        "type": "object",
        "additionalProperties": _object(
            ["scope", "scope_id", "scope_version", "schema", "yaml", "document"],
            scope={"enum": list(SCOPES)},
            scope_id=STRING,
            scope_version=VERSION,
            schema=STRING,
            yaml=STRING,
            document={"type": "object"},
        ),
    },
)
AUDIT_EVENT = _object(
    ["id", "at", "actor", "action"],
    id={"type": "integer"},
    at=TIME,
    actor=STRING,
    action=STRING,
    scope=NULLABLE_STRING,
    scope_id=NULLABLE_STRING,
    old_version=NULLABLE_VERSION,
    new_version=NULLABLE_VERSION,
    details={"type": ["object", "null"]},
)
SERVER_PROPERTIES: dict[str, Any] = {
    "id": STRING,
    "name": STRING,
    "trust_domain_deployment_id": STRING,
    "cluster_id": NULLABLE_STRING,
    "registered_at": TIME,
    "state": {"enum": list(SERVER_STATES)},
    "health": STRING,
    "last_contact_at": {"type": ["string", "null"]},
    "last_contact_seconds_ago": {"type": "integer", "minimum": 0},
    "last_report_at": {"type": ["string", "null"]},
    "clock_offset_seconds": {"type": ["number", "null"]},
    "error": NULLABLE_STRING,
    "keys": {"type": "array"},
}
SERVER = _object(
    ["id", "name", "trust_domain_deployment_id", "state", "health", "last_contact_seconds_ago"],
    **SERVER_PROPERTIES,
)
SERVER_INFO = _object(
    ["id", "name", "trust_domain_deployment_id", "trust_domain_id", "state", "health", "keys"],
    **{
        **SERVER_PROPERTIES,
        "trust_domain_id": STRING,
        "keys": {
            "type": "array",
            "items": _object(["kid", "in_bundle"], kid=STRING, in_bundle=BOOLEAN),
        },
    },
)
DEREGISTERED = _object(
    ["id", "name", "trust_domain_deployment_id", "withdrawn_keys", "kept_keys"],
    id=STRING,
    name=STRING,
    trust_domain_deployment_id=STRING,
    cluster_id=NULLABLE_STRING,
    withdrawn_keys={"type": "array", "items": STRING},
    kept_keys={"type": "array", "items": STRING},
)
COUNT = {"type": "integer", "minimum": 0}
STAGE_REF = _object(
    ["index", "name", "number", "of"],
    index=COUNT,
    name=STRING,
    number={"type": "integer", "minimum": 1},
    of={"type": "integer", "minimum": 1},
)
COUNTS = {"type": "object", "additionalProperties": COUNT}
DEPLOYMENT_ROLLOUT = _object(
    ["trust_domain_deployment_id", "name", "phase", "policy", "generation"],
    trust_domain_deployment_id=STRING,
    name=STRING,
    phase={"enum": list(rollouts.PHASES)},
    policy={
        "anyOf": [
            {"type": "null"},
            _object(
                ["stages", "on_failure"],
                stages={"type": "array", "items": {"type": "object"}},
                on_failure={"enum": [rollouts.ON_FAILURE_HALT, rollouts.ON_FAILURE_ROLLBACK]},
            ),
        ],
        "description": "the Rollout section's stages and onFailure; null: no policy",
    },
    generation=COUNT,
    stage=STAGE_REF,
    started_at=TIME,
    started_by=STRING,
    stage_started_at=TIME,
    ready_at={"type": ["string", "null"], "format": "date-time"},
    bake_seconds_left={"type": ["number", "null"]},
    waiting_for=NULLABLE_STRING,
    halt={
        "anyOf": [
            {"type": "null"},
            _object(["reason"], reason=STRING, server_id=NULLABLE_STRING, at=TIME),
        ]
    },
    accepted_failures={"type": "array", "items": STRING},
    changes={
        "type": "array",
        "items": _object(
            ["scope", "id", "from_version", "to_version"],
            scope={"enum": list(SCOPES)},
            id=STRING,
            from_version=VERSION,
            to_version=VERSION,
        ),
    },
    stages={
        "type": "array",
        "items": _object(
            ["index", "name", "select", "bake_seconds", "state", "counts"],
            index=COUNT,
            name=STRING,
            select={"type": "object"},
            bake_seconds={"type": "number", "minimum": 0},
            state={"enum": ["done", "skipped", "current", "pending"]},
            counts=COUNTS,
        ),
    },
    counts=COUNTS,
    servers={
        "type": "array",
        "items": _object(
            ["id", "name", "stage", "receives", "target_version", "progress", "state"],
            id=STRING,
            name=STRING,
            cluster_id=NULLABLE_STRING,
            stage=COUNT,
            receives={"enum": ["target", "stable"]},
            target_version=VERSION,
            stable_version=VERSION,
            applied_version=NULLABLE_VERSION,
            progress={"enum": list(SERVER_PROGRESS)},
            state={"enum": list(SERVER_STATES)},
            error=NULLABLE_STRING,
        ),
    },
    finished=BOOLEAN,
)
ROLLOUT = _object(
    ["scope", "id", "version", "current_version", "revision", "phase", "done", "counts", "servers"],
    scope={"enum": list(SCOPES)},
    id=STRING,
    version={"type": "integer", "minimum": 1},
    current_version={"type": "integer", "minimum": 1},
    revision={"type": "integer", "minimum": 1},
    phase={
        "type": "string",
        "description": "in_progress, done, refused, halted or aborted (the last four end a "
        "wait); treat any other value as not finished",
    },
    done=BOOLEAN,
    counts=_object(
        ["targeted", "applied", "refused", "pending", "unreachable"],
        targeted=COUNT,
        applied=COUNT,
        refused=COUNT,
        pending=COUNT,
        unreachable=COUNT,
    ),
    servers={
        "type": "array",
        "description": "targeted servers that have not applied it, refused first",
        "items": _object(
            ["id", "name", "progress", "state"],
            id=STRING,
            name=STRING,
            cluster_id=NULLABLE_STRING,
            progress={"enum": list(SERVER_PROGRESS)},
            state={"enum": list(SERVER_STATES)},
            desired_version=NULLABLE_VERSION,
            applied_version=NULLABLE_VERSION,
            error=NULLABLE_STRING,
            last_contact_at=TIME,
            last_contact_seconds_ago=COUNT,
        ),
    },
    stale_after_seconds={"type": "number", "minimum": 0},
    deployments={
        "type": "array",
        "description": "each deployment the version reaches; `stage` while a staged rollout "
        "still holds it back from some of its servers",
        "items": _object(
            ["id", "phase", "stage", "counts"],
            id=STRING,
            phase={"type": "string", "description": f"one of {', '.join(rollouts.PHASES[1:])}"},
            stage={"anyOf": [{"type": "null"}, STAGE_REF]},
            counts={"type": "object", "additionalProperties": COUNT},
            bake_seconds_left={"type": ["number", "null"]},
            halt_reason=NULLABLE_STRING,
        ),
    },
)
JWKS = _object(
    ["keys", "spiffe_sequence"],
    keys={"type": "array", "items": {"type": "object", "required": ["kty"]}},
    spiffe_sequence={"type": "integer", "minimum": 0},
    spiffe_refresh_hint={"type": "integer", "minimum": 0},
)
SYNC = _object(
    ["changed", "config", "bundle"],
    changed=BOOLEAN,
    config=_object(["version"], version=VERSION),
    bundle=_object(["version"], version=VERSION),
)
JOIN_TOKEN_ID_SCHEMA = {"type": "string", "pattern": f"^{JOIN_TOKEN_ID.pattern}$"}
JOIN_TOKEN_INFO = _object(
    ["id", "trust_domain_deployment_id", "state", "created_by", "created_at", "expires_at"],
    id=JOIN_TOKEN_ID_SCHEMA,
    trust_domain_deployment_id=STRING,
    state={"enum": ["valid", "expired", "used"]},
    created_by=STRING,
    created_at=TIME,
    expires_at=TIME,
    used_at=NULLABLE_TIME,
)
JOIN_TOKEN = _object(
    ["id", "token", "expires_at", "trust_domain_deployment_id"],
    id=JOIN_TOKEN_ID_SCHEMA,
    token=STRING,
    expires_at=TIME,
    trust_domain_deployment_id=STRING,
)
REGISTERED = _object(
    ["server_id", "credential", "trust_domain_deployment_id", "trust_domain_id", "trust_domain"],
    server_id=STRING,
    credential=STRING,
    trust_domain_deployment_id=STRING,
    trust_domain_id=STRING,
    trust_domain=STRING,
    cluster_id=NULLABLE_STRING,
)
REPORTED_LABEL = {"type": ["string", "null"], "maxLength": MAX_KEY_MANAGER_FIELD}
REPORTED_KEY_MANAGER = {
    "anyOf": [
        _object(
            ["type"],
            type={"type": "string", "maxLength": MAX_KEY_MANAGER_FIELD},
            digest=REPORTED_LABEL,
        ),
        REPORTED_LABEL,
    ]
}
STATUS_REPORT = _object(
    ["health"],
    health={"enum": list(HEALTH_VALUES)},
    desired_version=NULLABLE_VERSION,
    attempted_version=NULLABLE_VERSION,
    attempted_at=NULLABLE_TIME,
    applied_version=NULLABLE_VERSION,
    applied_at=NULLABLE_TIME,
    # Longer lines are kept cut to MAX_ERROR_CHARS (the report is also the heartbeat).
    error=NULLABLE_STRING,
    refused_version=NULLABLE_VERSION,
    key_manager=REPORTED_KEY_MANAGER,
    keys={
        "type": "array",
        "maxItems": MAX_KEYS_PER_REPORT,
        "items": _object(
            ["kid", "kind", "jwk", "not_after"],
            kid={"type": "string", "minLength": 1, "maxLength": 255},
            kind={"enum": list(KEY_KINDS)},
            jwk={"type": "object", "required": ["kty"]},
            not_before=TIME,
            not_after=TIME,
            key_type=REPORTED_LABEL,
            state=REPORTED_LABEL,
            key_manager=REPORTED_KEY_MANAGER,
            provider_ref={"type": "string", "maxLength": MAX_PROVIDER_REF},
            x5c={"type": "array", "items": STRING, "minItems": 1, "maxItems": 1},
        ),
    },
    reported_at=TIME,
)
NAME = {"type": "string", "minLength": 1, "maxLength": 255}


def _int(minimum: int = 0, maximum: int = MAX_INT) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


# -- operations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """What one method of one route takes and answers."""

    response: dict[str, Any] | None  # JSON schema of the success body; None: no body
    status: int = 200
    errors: tuple[int, ...] = (400, 401, 403, 404, 503)
    body: dict[str, Any] | None = None  # JSON request body
    body_required: bool = True
    yaml_body: bool = False  # also takes the upload as a raw YAML body
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    required_query: tuple[str, ...] = ()
    media_type: str = "application/json"


WRITE_ERRORS = (400, 401, 403, 404, 409, 413, 422, 503)
CONFIG_OPTIONS_QUERY: dict[str, dict[str, Any]] = {
    "prune": {"type": "boolean"},
    "validate_only": {"type": "boolean"},
    "expected_version": VERSION,
}
LIST_QUERY = {"limit": _int(1, HISTORY_LIMIT_MAX), "before": _int(1)}
FORCE_QUERY: dict[str, dict[str, Any]] = {
    "force": {
        "type": "boolean",
        "description": "deregister the servers that still use it first (each one audited)",
    }
}
WAIT: dict[str, Any] = {
    "type": "number",
    "minimum": 0,
    "description": f"seconds to wait for a change; more than {MAX_WAIT_SECONDS:g} is read as that",
    "default": DEFAULT_WAIT_SECONDS,
}

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("/healthz", "get"): Operation(_object(["status"], status=STRING), errors=()),
    ("/readyz", "get"): Operation(_object(["status"], status=STRING), errors=(503,)),
    ("/metrics", "get"): Operation(
        {"type": "string"}, errors=(401, 403, 503), media_type="text/plain"
    ),
    ("/v1/openapi.json", "get"): Operation({"type": "object"}, errors=(401, 503)),
    ("/v1/trust-domains", "get"): Operation(_items(TRUST_DOMAIN)),
    ("/v1/trust-domains", "post"): Operation(
        TRUST_DOMAIN,
        status=201,
        errors=(400, 401, 403, 409, 413, 503),
        body=_object(["name"], name={"type": "string", "minLength": 1, "maxLength": 255}),
    ),
    ("/v1/trust-domains/{td_id}", "get"): Operation(TRUST_DOMAIN),
    ("/v1/trust-domains/{td_id}", "delete"): Operation(
        None, status=204, errors=(400, 401, 403, 404, 409, 503)
    ),
    ("/v1/trust-domains/{td_id}/bundle", "get"): Operation(JWKS, errors=(404, 503)),
    ("/v1/trust-domain-deployments", "get"): Operation(
        _items(DEPLOYMENT), query={"trust_domain_id": STRING}
    ),
    ("/v1/trust-domain-deployments", "post"): Operation(
        DEPLOYMENT,
        status=201,
        errors=(400, 401, 403, 404, 409, 413, 503),
        body=_object(["name", "trust_domain_id"], name=NAME, trust_domain_id=STRING),
    ),
    ("/v1/trust-domain-deployments/{tdd_id}", "get"): Operation(DEPLOYMENT),
    ("/v1/trust-domain-deployments/{tdd_id}", "delete"): Operation(
        None, status=204, errors=(400, 401, 403, 404, 409, 503), query=FORCE_QUERY
    ),
    ("/v1/trust-domain-deployments/{tdd_id}/join-tokens", "get"): Operation(
        _items(JOIN_TOKEN_INFO), query={"limit": _int(1, JOIN_TOKEN_LIMIT_MAX)}
    ),
    ("/v1/trust-domain-deployments/{tdd_id}/join-tokens/{token_id}", "delete"): Operation(
        None, status=204, errors=(400, 401, 403, 404, 409, 503)
    ),
    ("/v1/trust-domain-deployments/{tdd_id}/join-tokens", "post"): Operation(
        JOIN_TOKEN,
        status=201,
        errors=(400, 401, 403, 404, 413, 503),
        body=_object(
            [],
            ttl_seconds={**_int(1, int(MAX_JOIN_TOKEN_TTL.total_seconds())), "default": 3600},
        ),
        body_required=False,
    ),
    ("/v1/trust-domain-deployments/{tdd_id}/servers", "get"): Operation(_items(SERVER)),
    ("/v1/trust-domain-deployments/{tdd_id}/rollout", "get"): Operation(DEPLOYMENT_ROLLOUT),
    ("/v1/trust-domain-deployments/{tdd_id}/rollout/{action}", "post"): Operation(
        DEPLOYMENT_ROLLOUT,
        errors=(400, 401, 403, 404, 409, 413, 503),
        body=_object(
            [],
            reason={
                "type": "string",
                "maxLength": MAX_REASON,
                "pattern": "^[^\\x00-\\x1f]*$",
                "description": "why (kept in the audit log)",
            },
        ),
        body_required=False,
    ),
    ("/v1/clusters", "get"): Operation(
        _items(CLUSTER), query={"trust_domain_deployment_id": STRING}
    ),
    ("/v1/clusters", "post"): Operation(
        CLUSTER,
        status=201,
        errors=(400, 401, 403, 404, 409, 413, 503),
        body=_object(
            ["name", "trust_domain_deployment_id"], name=NAME, trust_domain_deployment_id=STRING
        ),
    ),
    ("/v1/clusters/{cluster_id}", "get"): Operation(CLUSTER),
    ("/v1/clusters/{cluster_id}", "delete"): Operation(
        None, status=204, errors=(400, 401, 403, 404, 409, 503), query=FORCE_QUERY
    ),
    ("/v1/config/{scope}/{scope_id}", "get"): Operation(CONFIG),
    ("/v1/config/{scope}/{scope_id}", "put"): Operation(
        WRITE_RESULT,
        errors=WRITE_ERRORS,
        body=_object(
            ["yaml"],
            yaml={"type": "string", "description": "One or more YAML documents (---)."},
            prune=BOOLEAN,
            validate_only=BOOLEAN,
            expected_version=VERSION,
        ),
        yaml_body=True,
        query=CONFIG_OPTIONS_QUERY,
    ),
    ("/v1/config/{scope}/{scope_id}/sections/{section}", "delete"): Operation(
        WRITE_RESULT, errors=WRITE_ERRORS, query={"expected_version": VERSION}
    ),
    ("/v1/config/{scope}/{scope_id}/history", "get"): Operation(HISTORY, query=LIST_QUERY),
    ("/v1/config/{scope}/{scope_id}/versions/{version}", "get"): Operation(CONFIG),
    ("/v1/config/{scope}/{scope_id}/diff", "get"): Operation(
        DIFF, query={"from": VERSION, "to": VERSION}, required_query=("from", "to")
    ),
    ("/v1/config/{scope}/{scope_id}/rollback", "post"): Operation(
        WRITE_RESULT,
        errors=WRITE_ERRORS,
        body=_object(["version"], version=_int(1), expected_version=VERSION),
    ),
    ("/v1/effective-config", "get"): Operation(
        EFFECTIVE,
        query={"trust_domain_deployment_id": STRING, "cluster_id": STRING},
        required_query=("trust_domain_deployment_id",),
    ),
    ("/v1/audit", "get"): Operation(
        _items(AUDIT_EVENT), query={"limit": _int(1, AUDIT_LIMIT_MAX), "before": _int(1)}
    ),
    ("/v1/servers/register", "post"): Operation(
        REGISTERED,
        status=201,
        errors=(400, 401, 404, 413, 503),
        body=_object([], name=NAME, cluster_id=STRING),
        body_required=False,
    ),
    ("/v1/servers/{server_id}", "get"): Operation(SERVER_INFO),
    ("/v1/servers/{server_id}", "delete"): Operation(DEREGISTERED),
    ("/v1/rollouts/{scope}/{scope_id}", "get"): Operation(ROLLOUT, query={"version": _int(1)}),
    ("/v1/servers/{server_id}/sync", "get"): Operation(
        SYNC,
        query={
            "config_version": VERSION,
            "bundle_version": VERSION,
            "wait": WAIT,
        },
    ),
    ("/v1/servers/{server_id}/status", "post"): Operation(
        None, status=204, errors=(400, 401, 403, 404, 413, 503), body=STATUS_REPORT
    ),
}

PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "scope": {"enum": list(SCOPES)},
    "action": {"enum": list(rollouts.ACTIONS)},
    "version": _int(1),
}


def _parameters(route_path: str, op: Operation) -> list[dict[str, Any]]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": PATH_PARAMETERS.get(name, STRING)}
        for name in re.findall(r"{(\w+)}", route_path)
    ]
    params += [
        {"name": name, "in": "query", "required": name in op.required_query, "schema": schema}
        for name, schema in op.query.items()
    ]
    return params


def _responses(op: Operation) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "success"}
    if op.response is not None:
        success["content"] = {op.media_type: {"schema": op.response}}
    responses: dict[str, Any] = {str(op.status): success}
    for status in op.errors:
        error: dict[str, Any] = {
            "description": "error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        if status == 503:
            error["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 0}}}
        responses[str(status)] = error
    return responses


def _operation(route: Route, method: str, op: Operation) -> dict[str, Any]:
    summary = (route.endpoint.__doc__ or route.name).strip().splitlines()[0]
    out: dict[str, Any] = {
        "summary": summary,
        "operationId": f"{method}_{route.name}",
        "parameters": _parameters(route.path, op),
        "responses": _responses(op),
    }
    if op.body is not None:
        content: dict[str, Any] = {"application/json": {"schema": op.body}}
        if op.yaml_body:
            content["application/yaml"] = {"schema": {"type": "string"}}
        out["requestBody"] = {"required": op.body_required, "content": content}
    if (route.path, method) in PUBLIC:
        out["security"] = []
    return out


def _route_methods(routes: Iterable[BaseRoute]) -> Iterable[tuple[Route, str]]:
    for route in routes:
        if isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    yield route, method.lower()


def undescribed(routes: Iterable[BaseRoute]) -> list[str]:
    """Routes of the table that OPERATIONS does not describe (a test keeps this empty)."""
    return [
        f"{method.upper()} {route.path}"
        for route, method in _route_methods(routes)
        if (route.path, method) not in OPERATIONS
    ]


def document(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route, method in _route_methods(routes):
        op = OPERATIONS.get((route.path, method), Operation(None, errors=(400, 401, 403, 404)))
        paths.setdefault(route.path, {})[method] = _operation(route, method, op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "spirl control plane", "version": controlplane.__version__},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR_SCHEMA},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
