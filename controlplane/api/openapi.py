"""The OpenAPI document, generated from the route table so it cannot drift from it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from starlette.routing import BaseRoute, Route

import controlplane

PUBLIC = {("/healthz", "get"), ("/readyz", "get"), ("/v1/trust-domains/{td_id}/bundle", "get")}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}


def document(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        summary = (route.endpoint.__doc__ or route.name).strip().splitlines()[0]
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", route.path)
        ]
        for method in sorted(route.methods or ()):
            m = method.lower()
            if m == "head":
                continue
            op: dict[str, Any] = {
                "summary": summary,
                "operationId": f"{m}_{route.name}",
                "parameters": params,
                "responses": {
                    "200": {"description": "success"},
                    "default": {
                        "description": "error",
                        "content": {"application/json": {"schema": ERROR_SCHEMA}},
                    },
                },
            }
            if (route.path, m) in PUBLIC:
                op["security"] = []
            paths.setdefault(route.path, {})[m] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "spirl control plane", "version": controlplane.__version__},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }
