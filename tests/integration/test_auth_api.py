"""Tokens, roles, server credentials, audit log and secrets, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text

from support.api import KEY_MANAGER_AZURE, make_topology, ok, put_config, register_server

SAMPLE_IDS = {
    "td_id": "td-x",
    "tdd_id": "tdd-x",
    "cluster_id": "c-x",
    "scope": "cluster",
    "scope_id": "c-x",
    "section": "KeyManager",
    "version": "1",
    "server_id": "tds-x",
    "action": "pause",
    "token_id": "jt-0123456789abcdef",
}


def test_every_route_but_public_ones_requires_a_token(live_api):
    with live_api.client() as c:
        document = ok(c.get("/v1/openapi.json"))
    anonymous = httpx.Client(base_url=live_api.url, timeout=10)
    checked = 0
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            url = path.format(**SAMPLE_IDS)
            response = anonymous.request(
                method.upper(), url, json={} if method in ("post", "put") else None
            )
            if op.get("security") == []:
                assert response.status_code != 401, f"{method} {path} is public"
                continue
            checked += 1
            assert response.status_code == 401, (
                f"{method.upper()} {path} answered {response.status_code}"
            )
            assert response.json()["error"] == "unauthenticated"
            bad = anonymous.request(method.upper(), url, headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401
    assert checked >= 20


def test_viewer_reads_but_cannot_write(live_api):
    with live_api.client() as admin, live_api.client("viewer") as viewer:
        ids = make_topology(admin)
        assert viewer.get("/v1/trust-domains").status_code == 200
        r = put_config(viewer, "trust-domain-deployment", ids["tdd"], KEY_MANAGER_AZURE)
        assert r.status_code == 403 and "admin" in r.json()["message"]
        assert viewer.post("/v1/trust-domains", json={"name": "x.org"}).status_code == 403


def test_server_credential_is_scoped_to_its_deployment(live_api):
    with live_api.client() as admin:
        ids = make_topology(admin)
        td2 = ok(admin.post("/v1/trust-domains", json={"name": "other.org"}), 201)
        tdd2 = ok(
            admin.post(
                "/v1/trust-domain-deployments", json={"name": "p", "trust_domain_id": td2["id"]}
            ),
            201,
        )
        s1 = register_server(admin, ids["tdd"], ids["cluster"], name="a")
        s2 = register_server(admin, tdd2["id"], name="b")
    with live_api.client(s1["credential"]) as server:
        assert (
            server.get(f"/v1/servers/{s1['server_id']}/sync", params={"wait": 0}).status_code == 200
        )
        assert (
            server.get(f"/v1/servers/{s2['server_id']}/sync", params={"wait": 0}).status_code == 403
        )
        assert server.get(f"/v1/config/trust-domain-deployment/{tdd2['id']}").status_code == 403
        assert server.get("/v1/trust-domains").status_code == 403


def test_join_token_is_single_use(live_api):
    with live_api.client() as admin:
        ids = make_topology(admin)
        join = ok(
            admin.post(
                f"/v1/trust-domain-deployments/{ids['tdd']}/join-tokens", json={"ttl_seconds": 60}
            ),
            201,
        )
    headers = {"Authorization": f"Bearer {join['token']}"}
    first = httpx.post(f"{live_api.url}/v1/servers/register", json={"name": "a"}, headers=headers)
    assert first.status_code == 201
    again = httpx.post(f"{live_api.url}/v1/servers/register", json={"name": "b"}, headers=headers)
    assert again.status_code == 401 and "already used" in again.json()["message"]


def test_a_join_token_is_revoked_before_use_and_a_used_one_is_refused(live_api):
    with live_api.client() as admin, live_api.client("viewer") as viewer:
        ids = make_topology(admin)
        tokens_path = f"/v1/trust-domain-deployments/{ids['tdd']}/join-tokens"
        spare, used = (ok(admin.post(tokens_path, json={}), 201) for _ in range(2))
        register_with(live_api.url, used["token"], 201)
        listed = ok(viewer.get(tokens_path))["items"]
        assert [(t["id"], t["state"]) for t in listed] == [
            (used["id"], "used"),
            (spare["id"], "valid"),
        ]
        assert all(spare["token"] not in repr(t) for t in listed)
        [newest] = ok(viewer.get(tokens_path, params={"limit": 1}))["items"]
        assert newest["id"] == used["id"]

        assert viewer.delete(f"{tokens_path}/{spare['id']}").status_code == 403
        other = make_topology(admin, "other.org")
        r = admin.delete(f"/v1/trust-domain-deployments/{other['tdd']}/join-tokens/{spare['id']}")
        assert r.status_code == 404  # another deployment's token
        r = admin.delete(f"{tokens_path}/{spare['token']}")
        assert r.status_code == 400 and r.json()["error"] == "bad_request"  # not an id
        assert admin.delete(f"{tokens_path}/{spare['id']}").status_code == 204
        register_with(live_api.url, spare["token"], 401)
        assert admin.delete(f"{tokens_path}/{spare['id']}").status_code == 404

        r = admin.delete(f"{tokens_path}/{used['id']}")
        assert r.status_code == 409 and r.json()["error"] == "join_token_used"
        assert [t["state"] for t in ok(admin.get(tokens_path))["items"]] == ["used"]
        revoked = ok(admin.get("/v1/audit"))["items"]
        assert [e["details"] for e in revoked if e["action"] == "join_token.revoke"] == [
            {"join_token_id": spare["id"]}
        ]


def test_join_tokens_expired_for_over_a_week_are_purged(live_api):
    """Housekeeping's purge (services.auth.purge_join_tokens): an expired token is listed as
    expired for a week, then deleted, used or not; valid ones stay."""
    from controlplane.domain import join_token_id
    from controlplane.services.auth import JOIN_TOKEN_KEPT_EXPIRED, purge_join_tokens
    from controlplane.store.unit_of_work import UnitOfWorkFactory

    with live_api.client() as admin:
        ids = make_topology(admin)
        tokens_path = f"/v1/trust-domain-deployments/{ids['tdd']}/join-tokens"
        old_used, old_unused, recent, valid = (
            ok(admin.post(tokens_path, json={}), 201) for _ in range(4)
        )
        register_with(live_api.url, old_used["token"], 201)
        now = datetime.now(UTC)
        expired_at = {
            old_used["id"]: now - JOIN_TOKEN_KEPT_EXPIRED - timedelta(minutes=1),
            old_unused["id"]: now - JOIN_TOKEN_KEPT_EXPIRED - timedelta(days=30),
            recent["id"]: now - JOIN_TOKEN_KEPT_EXPIRED + timedelta(minutes=1),
        }
        uow_factory = UnitOfWorkFactory(live_api.engine)
        with uow_factory() as uow:  # time passes: the stored expiry moves back
            for row in uow.repo.join_tokens(ids["tdd"], 10):
                row.expires_at = expired_at.get(join_token_id(row.token_hash), row.expires_at)
            uow.commit()
        assert purge_join_tokens(uow_factory, now) == 2
        listed = {t["id"]: t["state"] for t in ok(admin.get(tokens_path))["items"]}
        assert listed == {recent["id"]: "expired", valid["id"]: "valid"}
        assert purge_join_tokens(uow_factory, now) == 0


def register_with(url: str, join_token: str, status: int) -> None:
    r = httpx.post(
        f"{url}/v1/servers/register",
        json={"name": "a"},
        headers={"Authorization": f"Bearer {join_token}"},
    )
    assert r.status_code == status, r.text


def test_tokens_are_stored_hashed_and_audit_has_no_secrets(live_api):
    with live_api.client() as admin:
        ids = make_topology(admin)
        join = ok(
            admin.post(f"/v1/trust-domain-deployments/{ids['tdd']}/join-tokens", json={}), 201
        )
        server = httpx.post(
            f"{live_api.url}/v1/servers/register",
            json={"name": "a"},
            headers={"Authorization": f"Bearer {join['token']}"},
        ).json()
        ok(put_config(admin, "trust-domain-deployment", ids["tdd"], KEY_MANAGER_AZURE))
        audit = ok(admin.get("/v1/audit"))["items"]
    secrets = [live_api.admin_token, live_api.viewer_token, join["token"], server["credential"]]
    with live_api.engine.connect() as conn:
        dump = []
        for table in (
            "tokens",
            "join_tokens",
            "audit_events",
            "servers",
            "config_sections",
            "config_versions",
        ):
            dump += [repr(tuple(row)) for row in conn.execute(text(f"SELECT * FROM {table}"))]
    blob = "\n".join(dump) + repr(audit)
    for secret in secrets:
        assert secret not in blob
    actions = [e["action"] for e in audit]
    assert (
        "config.set" in actions and "server.register" in actions and "join_token.create" in actions
    )
    config_event = next(e for e in audit if e["action"] == "config.set")
    assert config_event["old_version"] == 0 and config_event["new_version"] == 1
    assert config_event["actor"] == "admin:test-admin" and config_event["scope_id"] == ids["tdd"]


def test_health_ready_and_metrics(live_api):
    anonymous = httpx.Client(base_url=live_api.url, timeout=10)
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    assert anonymous.get("/readyz").json() == {"status": "ready"}
    assert anonymous.get("/metrics").status_code == 401
    with live_api.client() as admin:
        ids = make_topology(admin)
        ok(put_config(admin, "trust-domain-deployment", ids["tdd"], KEY_MANAGER_AZURE))
        metrics = admin.get("/metrics").text
    assert 'spirl_config_versions{scope="trust-domain-deployment"} 1' in metrics
    assert "spirl_longpolls_waiting 0" in metrics
    assert (
        'spirl_http_request_duration_seconds_count{method="PUT",route="/v1/config/{scope}/{scope_id}"} 1'
        in metrics
    )
