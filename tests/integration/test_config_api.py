"""Config at scopes through the HTTP API, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import func, select

from controlplane.store.models import ConfigVersionRow

from support.api import KEY_LIFECYCLE, KEY_MANAGER_AZURE, make_topology, ok, put_config

TDD = "trust-domain-deployment"


def _versions(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(ConfigVersionRow)).scalar_one()


def test_set_get_history_and_unchanged_upload(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        result = ok(put_config(c, TDD, ids["tdd"], KEY_MANAGER_AZURE))
        assert result == {
            "version": 1,
            "previous_version": 0,
            "changed": True,
            "validate_only": False,
            "sections": ["KeyManager"],
        }
        current = ok(c.get(f"/v1/config/{TDD}/{ids['tdd']}"))
        assert current["version"] == 1 and current["actor"] == "admin:test-admin"
        doc = current["sections"]["KeyManager"]["document"]
        assert (
            doc["spec"]["extensions"]["azureKeyVault"]["vaultURL"]
            == "https://my-key-vault.vault.azure.net/"
        )
        # The same document written differently stores nothing new.
        reformatted = KEY_MANAGER_AZURE.replace(
            '"https://my-key-vault.vault.azure.net/"', "'https://my-key-vault.vault.azure.net/'"
        )
        again = ok(put_config(c, TDD, ids["tdd"], reformatted))
        assert again["changed"] is False and again["version"] == 1
        ok(put_config(c, TDD, ids["tdd"], KEY_LIFECYCLE))
        history = ok(c.get(f"/v1/config/{TDD}/{ids['tdd']}/history"))["items"]
        assert [h["version"] for h in history] == [2, 1]
        assert history[0]["sections"] == ["KeyLifecycle", "KeyManager"]
        assert all(h["actor"] == "admin:test-admin" and h["created_at"] for h in history)
        page = ok(c.get(f"/v1/config/{TDD}/{ids['tdd']}/history", params={"limit": 1}))
        assert [h["version"] for h in page["items"]] == [2] and page["next_before"] == 2
        older = ok(
            c.get(f"/v1/config/{TDD}/{ids['tdd']}/history", params={"limit": 1, "before": 2})
        )
        assert [h["version"] for h in older["items"]] == [1]


def test_several_documents_and_prune(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        ok(put_config(c, TDD, ids["tdd"], KEY_MANAGER_AZURE + "---\n" + KEY_LIFECYCLE))
        assert set(ok(c.get(f"/v1/config/{TDD}/{ids['tdd']}"))["sections"]) == {
            "KeyManager",
            "KeyLifecycle",
        }
        result = ok(put_config(c, TDD, ids["tdd"], KEY_LIFECYCLE, prune=True))
        assert result["version"] == 2 and result["sections"] == ["KeyLifecycle"]
        assert set(ok(c.get(f"/v1/config/{TDD}/{ids['tdd']}"))["sections"]) == {"KeyLifecycle"}


def test_expected_version_conflict_names_both_versions(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        ok(put_config(c, TDD, ids["tdd"], KEY_MANAGER_AZURE))
        r = put_config(c, TDD, ids["tdd"], KEY_LIFECYCLE, expected_version=0)
        assert r.status_code == 409
        body = r.json()
        assert body["error"] == "version_conflict"
        assert body["expected_version"] == 0 and body["current_version"] == 1
        assert "version 1" in body["message"] and "version 0" in body["message"]
        assert ok(c.get(f"/v1/config/{TDD}/{ids['tdd']}"))["version"] == 1
        assert ok(put_config(c, TDD, ids["tdd"], KEY_LIFECYCLE, expected_version=1))["version"] == 2


def test_validate_only_stores_nothing(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        before = _versions(live_api.engine)
        result = ok(put_config(c, TDD, ids["tdd"], KEY_MANAGER_AZURE, validate_only=True))
        assert (
            result["validate_only"] is True
            and result["changed"] is False
            and result["version"] == 0
        )
        assert _versions(live_api.engine) == before
        bad = put_config(
            c, TDD, ids["tdd"], KEY_MANAGER_AZURE.replace("https://", "http://"), validate_only=True
        )
        assert bad.status_code == 422


def test_validation_errors_all_at_once_and_nothing_stored(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        ok(put_config(c, TDD, ids["tdd"], KEY_LIFECYCLE))
        bad = (
            KEY_MANAGER_AZURE.replace("https://", "http://") + "      keyTags: {'azure:team': x}\n"
        )
        r = put_config(c, TDD, ids["tdd"], KEY_LIFECYCLE.replace("12h", "-5m") + "---\n" + bad)
        assert r.status_code == 422
        errors = r.json()["errors"]
        pointers = {(e["section"], e["pointer"]) for e in errors}
        assert ("KeyManager", "/spec/extensions/azureKeyVault/vaultURL") in pointers
        assert ("KeyLifecycle", "/spec/jwtKeyTTL") in pointers
        assert any(
            e["pointer"].startswith("/spec/extensions/azureKeyVault/keyTags") for e in errors
        )
        assert ok(c.get(f"/v1/config/{TDD}/{ids['tdd']}"))["version"] == 1


def test_section_not_allowed_at_scope(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        r = put_config(c, "trust-domain", ids["td"], KEY_MANAGER_AZURE)
        assert r.status_code == 422
        [error] = r.json()["errors"]
        assert error["pointer"] == "/section" and "cluster" in error["reason"]
        assert ok(put_config(c, "trust-domain", ids["td"], KEY_LIFECYCLE))["version"] == 1


def test_delete_section_diff_and_rollback(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        base = f"/v1/config/cluster/{ids['cluster']}"
        ok(put_config(c, "cluster", ids["cluster"], KEY_MANAGER_AZURE + "---\n" + KEY_LIFECYCLE))
        changed = KEY_MANAGER_AZURE.replace("my-key-vault", "other-vault")
        ok(put_config(c, "cluster", ids["cluster"], changed))
        deleted = ok(c.delete(f"{base}/sections/KeyLifecycle"))
        assert deleted["version"] == 3 and deleted["sections"] == ["KeyManager"]
        assert c.delete(f"{base}/sections/KeyLifecycle").status_code == 404
        diff = ok(c.get(f"{base}/diff", params={"from": 1, "to": 3}))
        by_section = {d["section"]: d for d in diff["sections"]}
        assert (
            by_section["KeyLifecycle"]["change"] == "removed"
            and by_section["KeyLifecycle"]["new_yaml"] is None
        )
        assert by_section["KeyManager"]["change"] == "changed"
        assert "my-key-vault" in by_section["KeyManager"]["old_yaml"]
        assert "other-vault" in by_section["KeyManager"]["new_yaml"]
        added = ok(c.get(f"{base}/diff", params={"from": 0, "to": 1}))
        assert {d["change"] for d in added["sections"]} == {"added"}
        rolled = ok(c.post(f"{base}/rollback", json={"version": 1, "expected_version": 3}))
        assert rolled["version"] == 4 and rolled["changed"] is True
        v4 = ok(c.get(f"{base}/versions/4"))
        v1 = ok(c.get(f"{base}/versions/1"))
        assert v4["sections"] == v1["sections"]
        history = ok(c.get(f"{base}/history"))["items"]
        assert [h["action"] for h in history] == ["rollback", "delete-section", "set", "set"]
        assert c.post(f"{base}/rollback", json={"version": 99}).status_code == 404


def test_effective_config_precedence_names_scopes(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        ok(put_config(c, "trust-domain", ids["td"], KEY_LIFECYCLE))
        ok(put_config(c, TDD, ids["tdd"], KEY_MANAGER_AZURE))
        eff = ok(c.get("/v1/effective-config", params={"trust_domain_deployment_id": ids["tdd"]}))
        assert eff["sections"]["KeyManager"]["scope"] == TDD
        assert eff["sections"]["KeyLifecycle"]["scope"] == "trust-domain"
        ok(
            put_config(
                c,
                "cluster",
                ids["cluster"],
                KEY_MANAGER_AZURE.replace("my-key-vault", "east-vault"),
            )
        )
        eff2 = ok(
            c.get(
                "/v1/effective-config",
                params={"trust_domain_deployment_id": ids["tdd"], "cluster_id": ids["cluster"]},
            )
        )
        km = eff2["sections"]["KeyManager"]
        assert km["scope"] == "cluster" and km["scope_id"] == ids["cluster"]
        assert "east-vault" in km["yaml"]
        assert eff2["version"] > eff["version"]
        # Without the cluster, the deployment's section still applies.
        eff3 = ok(c.get("/v1/effective-config", params={"trust_domain_deployment_id": ids["tdd"]}))
        assert eff3["sections"]["KeyManager"]["scope"] == TDD


def test_unknown_scope_and_missing_owner(live_api):
    with live_api.client() as c:
        assert c.get("/v1/config/galaxy/x").status_code == 404
        r = put_config(c, "cluster", "c-missing", KEY_LIFECYCLE)
        assert r.status_code == 404 and "c-missing" in r.json()["message"]


def _lifecycle(hours: int) -> str:
    return f"section: KeyLifecycle\nschema: v1\nspec:\n  x509CATTL: {hours}h\n"


def _concurrently(calls: list) -> list[httpx.Response]:  # type: ignore[type-arg]
    barrier = threading.Barrier(len(calls))

    def run(call):  # type: ignore[no-untyped-def]
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_concurrent_blind_writes_all_succeed_with_distinct_versions(live_api):
    # Without expected_version a write never fails because of another writer (issue 9: on
    # PostgreSQL 17 of 20 used to get a 409 naming a version no client sent).
    with live_api.client() as c:
        ids = make_topology(c)
    url = f"/v1/config/trust-domain/{ids['td']}"
    clients = [live_api.client() for _ in range(20)]
    try:
        responses = _concurrently(
            [
                (lambda c=c, i=i: c.put(url, json={"yaml": _lifecycle(i + 1)}))
                for i, c in enumerate(clients)
            ]
        )
    finally:
        for c in clients:
            c.close()
    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses]
    versions = sorted(r.json()["version"] for r in responses)
    assert versions == list(range(1, 21))
    with live_api.client() as c:
        history = ok(c.get(f"{url}/history", params={"limit": 50}))["items"]
    assert [h["version"] for h in history] == list(range(20, 0, -1))


def test_racing_writes_with_expected_version_conflict_naming_the_sent_version(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        url = f"/v1/config/trust-domain/{ids['td']}"
        ok(c.put(url, json={"yaml": _lifecycle(1)}))
    clients = [live_api.client() for _ in range(8)]
    try:
        responses = _concurrently(
            [
                (
                    lambda c=c, i=i: c.put(
                        url, json={"yaml": _lifecycle(i + 2), "expected_version": 1}
                    )
                )
                for i, c in enumerate(clients)
            ]
        )
    finally:
        for c in clients:
            c.close()
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * 7, [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            body = r.json()
            assert body["error"] == "version_conflict"
            assert body["expected_version"] == 1 and body["current_version"] == 2
            assert "not the expected version 1" in body["message"]
    with live_api.client() as c:
        assert ok(c.get(url))["version"] == 2
