"""PostgreSQL down: every API route answers 503 with Retry-After (never a 500), the outage is
logged once (not once per request), and the control plane serves again once it is back.

A throwaway PostgreSQL server of its own is stopped (pg_ctl stop -m fast) and started
again on the same port, so other tests' databases are not touched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from controlplane.store.database import create_db_engine, migrate

from support.api import KEY_LIFECYCLE, make_topology, ok, put_config, register_server
from support.live_api import LiveApi, serve_api
from support.postgres import PostgresServer, start_postgres

# Routes that need no database: they keep answering during the outage.
NO_DATABASE = {("get", "/healthz"): 200, ("get", "/v1/openapi.json"): 200}
QUERIES = {
    ("get", "/v1/config/{scope}/{scope_id}/diff"): {"from": "0", "to": "1"},
    ("get", "/v1/effective-config"): {"trust_domain_deployment_id": "{tdd_id}"},
    ("get", "/v1/servers/{server_id}/sync"): {"wait": "0"},
}
SERVER_ROUTES = ("/v1/servers/{server_id}/sync", "/v1/servers/{server_id}/status")
BODIES = {
    ("post", "/v1/trust-domains"): {"name": "outage.example"},
    ("post", "/v1/trust-domain-deployments"): {"name": "d", "trust_domain_id": "{td_id}"},
    ("post", "/v1/clusters"): {"name": "c", "trust_domain_deployment_id": "{tdd_id}"},
    ("put", "/v1/config/{scope}/{scope_id}"): {"yaml": KEY_LIFECYCLE},
    ("post", "/v1/config/{scope}/{scope_id}/rollback"): {"version": 1},
    ("post", "/v1/servers/{server_id}/status"): {"health": "HEALTHY", "keys": []},
}


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api_on_own_postgres(own_postgres: PostgresServer) -> Iterator[LiveApi]:
    engine = create_db_engine(own_postgres.create_database())
    migrate(engine)
    try:
        with serve_api(engine) as api:
            yield api
    finally:
        engine.dispose()


def _fill(value, ids):  # type: ignore[no-untyped-def]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value.format(**ids) if isinstance(value, str) else value


def test_every_route_answers_503_while_postgres_is_down(
    api_on_own_postgres: LiveApi, own_postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    api = api_on_own_postgres
    with api.client() as c:
        ids = make_topology(c)
        ok(put_config(c, "trust-domain", ids["td"], KEY_LIFECYCLE))
        server = register_server(c, ids["tdd"], ids["cluster"])
        paths = ok(c.get("/v1/openapi.json"))["paths"]
    names = {
        "td_id": ids["td"],
        "tdd_id": ids["tdd"],
        "cluster_id": ids["cluster"],
        "scope": "trust-domain",
        "scope_id": ids["td"],
        "section": "KeyLifecycle",
        "version": "1",
        "server_id": server["server_id"],
        "action": "pause",
    }
    join = ok(
        api.client().post(f"/v1/trust-domain-deployments/{ids['tdd']}/join-tokens", json={}), 201
    )
    names["token_id"] = join["id"]
    caplog.set_level(logging.INFO)
    own_postgres.halt()
    failures = []
    requests = 0
    for path, operations in paths.items():
        for method in operations:
            if path in SERVER_ROUTES:
                token = server["credential"]
            elif path == "/v1/servers/register":
                token = join["token"]
            else:
                token = api.admin_token
            body = _fill(BODIES.get((method, path)), names)
            for _ in range(2):  # each route twice: still one log line
                requests += 1
                response = httpx.request(
                    method.upper(),
                    api.url + path.format(**names),
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                    params=_fill(QUERIES.get((method, path)), names),
                    timeout=30,
                )
                expected = NO_DATABASE.get((method, path), 503)
                if response.status_code != expected:
                    failures.append(
                        f"{method.upper()} {path}: {response.status_code} {response.text}"
                    )
                elif expected == 503 and path != "/readyz":
                    error = response.json()
                    if error.get("error") != "unavailable" or "Retry-After" not in response.headers:
                        failures.append(f"{method.upper()} {path}: {error} {response.headers}")
    assert not failures, "\n".join(failures)
    assert requests >= 50
    down = [r for r in caplog.records if r.getMessage().startswith("database unavailable")]
    assert len(down) == 1, [r.getMessage() for r in down]

    own_postgres.resume()
    with api.client() as c:
        assert ok(c.get(f"/v1/config/trust-domain/{ids['td']}"))["version"] == 1
        ok(put_config(c, "trust-domain", ids["td"], KEY_LIFECYCLE.replace("48h", "24h")))
    back = [r for r in caplog.records if r.getMessage() == "database available again"]
    assert len(back) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r is not down[0]]
