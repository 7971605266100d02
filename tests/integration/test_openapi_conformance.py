"""The served OpenAPI document describes every route, and the live server conforms to it.

schemathesis (the third-party verifier) generates requests from the document, a bounded number
per operation, and checks each answer: no 5xx, a documented status code and content type,
headers and a body that match the documented schemas. Half of the cases use the ids of real
objects, so validation and writes run too, not only 404s; negative cases (data that breaks
the document) must get a 4xx, never a 5xx.
"""

from __future__ import annotations

import itertools

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from controlplane.api import openapi
from controlplane.api.app import ROUTES

from support.api import KEY_LIFECYCLE, make_topology, ok, put_config, register_server

EXAMPLES_PER_OPERATION = 4  # per operation, mode (positive, negative) and ids (random, real)
SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_every_route_is_described() -> None:
    assert openapi.undescribed(ROUTES) == []
    document = openapi.document(ROUTES)
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            assert any(code.startswith("2") for code in op["responses"]), where
            if method in ("post", "put") and path not in ("/v1/servers/register",):
                assert "requestBody" in op or path.endswith("/join-tokens"), where


SCOPE_IDS = {"trust-domain": "td", "trust-domain-deployment": "tdd", "cluster": "cluster"}


def _real_ids(path: str, ids: dict[str, str]) -> dict[str, str]:
    """Path parameters naming real objects, for the operation at `path`."""
    names = {
        "td_id": ids["td"],
        "tdd_id": ids["tdd"],
        "cluster_id": ids["cluster"],
        "server_id": ids["server"],
        "scope": "trust-domain",
        "scope_id": ids["td"],
    }
    return {name: value for name, value in names.items() if "{" + name + "}" in path}


def test_live_server_conforms_to_its_openapi_document(live_api) -> None:  # type: ignore[no-untyped-def]
    with live_api.client() as c:
        ids = make_topology(c)
        ok(put_config(c, "trust-domain", ids["td"], KEY_LIFECYCLE))
        server = register_server(c, ids["tdd"], ids["cluster"])
    ids["server"] = server["server_id"]
    auth = {"Authorization": f"Bearer {live_api.admin_token}"}
    schema = schemathesis.openapi.from_url(f"{live_api.url}/v1/openapi.json", headers=auth)
    failures: list[str] = []
    tested = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        tested.add((operation.path, operation.method.lower()))
        for mode, real in itertools.product(GenerationMode, (False, True)):
            fixed = _real_ids(operation.path, ids) if real else None
            if real and not fixed:
                continue  # no ids in this path: the random run covers it
            strategy = operation.as_strategy(mode, path_parameters=fixed)

            @given(case=strategy)
            @SETTINGS
            def run(case) -> None:  # type: ignore[no-untyped-def]
                case.call_and_validate(headers=auth, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                pass  # negative mode: nothing in this operation can be made invalid
            except (Exception, BaseExceptionGroup) as exc:  # try every operation, show all failures
                failures.append(f"{operation.label} ({mode}, real ids: {real}): {exc}")
    assert not failures, "\n\n".join(failures)
    described = {(p, m) for p, ops in openapi.document(ROUTES)["paths"].items() for m in ops}
    # schemathesis leaves out the operation that serves the document it was loaded from
    assert tested == described - {("/v1/openapi.json", "get")}
