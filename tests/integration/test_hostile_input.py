"""The hostile corpora over HTTP, on SQLite and PostgreSQL: every bad document and every bad
request is refused with our status, error code and message, and nothing is stored."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from controlplane.store.models import (
    AuditEventRow,
    ConfigHeadRow,
    ConfigSectionRow,
    ConfigVersionRow,
    JoinTokenRow,
    ServerRow,
    TokenRow,
    TrustDomainRow,
)

from corpus.bad_corpus import load_cases
from corpus.bad_requests import REQUESTS
from support.api import KEY_LIFECYCLE, make_topology, ok, put_config, register_server

MODELS = (
    ConfigVersionRow,
    ConfigSectionRow,
    ConfigHeadRow,
    AuditEventRow,
    JoinTokenRow,
    ServerRow,
    TokenRow,
    TrustDomainRow,
)


def _row_counts(engine) -> tuple[int, ...]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(select(func.count()).select_from(model)).scalar_one() for model in MODELS
        )


def test_bad_corpus_is_refused_and_nothing_changes(live_api):
    cases = load_cases()
    assert len(cases) >= 30
    with live_api.client() as c:
        ids = make_topology(c)
        scope_ids = {
            "cluster": ids["cluster"],
            "trust-domain-deployment": ids["tdd"],
            "trust-domain": ids["td"],
        }
        for scope, scope_id in scope_ids.items():
            ok(put_config(c, scope, scope_id, KEY_LIFECYCLE))
        before = _row_counts(live_api.engine)
        failures = []
        for case in cases:
            response = c.put(
                f"/v1/config/{case.scope}/{scope_ids[case.scope]}",
                content=case.data,
                headers={"Content-Type": "application/yaml"},
            )
            body = response.json()
            if case.kind == "input_rejected":
                want = 413 if case.too_large else 400
                if (
                    response.status_code != want
                    or body.get("error") != "input_rejected"
                    or case.reason not in body.get("message", "")
                ):
                    failures.append(f"{case.name}: {response.status_code} {body}")
            else:
                issues = body.get("errors", [])
                if response.status_code != 422 or not any(
                    case.reason in i["reason"]
                    and (case.pointer is None or i["pointer"] == case.pointer)
                    for i in issues
                ):
                    failures.append(f"{case.name}: {response.status_code} {body}")
        assert not failures, "\n".join(failures)
        assert _row_counts(live_api.engine) == before
        for scope, scope_id in scope_ids.items():
            assert ok(c.get(f"/v1/config/{scope}/{scope_id}"))["version"] == 1
    assert httpx.get(f"{live_api.url}/healthz").status_code == 200


def test_malformed_json_and_wrong_types_are_400(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        url = f"/v1/config/cluster/{ids['cluster']}"
        assert (
            c.put(
                url, content=b"{not json", headers={"Content-Type": "application/json"}
            ).status_code
            == 400
        )
        assert c.put(url, json=["a list"]).status_code == 400
        r = c.put(url, json={"yaml": 42})
        assert r.status_code == 400 and "yaml must be a string" in r.json()["message"]
        r = c.put(url, json={"yaml": KEY_LIFECYCLE, "expected_version": "three"})
        assert r.status_code == 400 and "expected_version" in r.json()["message"]
        r = c.put(url, json={"yaml": KEY_LIFECYCLE, "prune": "yes"})
        assert r.status_code == 400 and "prune" in r.json()["message"]
        huge = c.put(
            url, content=b"x" * (3 * 1024 * 1024), headers={"Content-Type": "application/json"}
        )
        assert huge.status_code == 413
        assert ok(c.get(url))["version"] == 0


def test_bad_requests_are_refused_and_nothing_changes(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        ok(put_config(c, "trust-domain", ids["td"], KEY_LIFECYCLE))
        server = register_server(c, ids["tdd"], ids["cluster"])
    names = {**ids, "server": server["server_id"]}
    before = _row_counts(live_api.engine)
    failures = []
    with live_api.client() as admin, live_api.client(server["credential"]) as as_server:
        for case in REQUESTS:
            client = as_server if case.token == "server" else admin
            response = client.request(case.method, case.path.format(**names), **case.body())
            body = response.json()
            if (
                response.status_code != case.status
                or body.get("error") != case.error
                or case.message not in body.get("message", "")
            ):
                failures.append(f"{case.name}: {response.status_code} {body}")
        assert not failures, "\n".join(failures)
        assert _row_counts(live_api.engine) == before
        assert ok(admin.get(f"/v1/config/trust-domain/{ids['td']}"))["version"] == 1
    assert httpx.get(f"{live_api.url}/healthz").status_code == 200
