"""Trust domains, deployments and clusters through the HTTP API, on SQLite and PostgreSQL."""

from __future__ import annotations

from support.api import make_topology, ok


def test_create_list_get_and_ids(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        assert (
            ids["td"].startswith("td-")
            and ids["tdd"].startswith("tdd-")
            and ids["cluster"].startswith("c-")
        )
        assert [t["name"] for t in ok(c.get("/v1/trust-domains"))["items"]] == ["example.org"]
        tdd = ok(c.get(f"/v1/trust-domain-deployments/{ids['tdd']}"))
        assert tdd["trust_domain_name"] == "example.org" and tdd["clusters"] == [ids["cluster"]]
        listed = ok(c.get("/v1/clusters", params={"trust_domain_deployment_id": ids["tdd"]}))[
            "items"
        ]
        assert [x["id"] for x in listed] == [ids["cluster"]]


def test_delete_with_children_is_refused_then_allowed(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        r = c.delete(f"/v1/trust-domains/{ids['td']}")
        assert r.status_code == 409 and r.json()["error"] == "has_children"
        assert ids["tdd"] in r.json()["message"]
        r = c.delete(f"/v1/trust-domain-deployments/{ids['tdd']}")
        assert r.status_code == 409 and ids["cluster"] in r.json()["message"]
        assert c.delete(f"/v1/clusters/{ids['cluster']}").status_code == 204
        assert c.delete(f"/v1/trust-domain-deployments/{ids['tdd']}").status_code == 204
        assert c.delete(f"/v1/trust-domains/{ids['td']}").status_code == 204
        assert c.get(f"/v1/trust-domains/{ids['td']}").status_code == 404


def test_duplicate_and_bad_names(live_api):
    with live_api.client() as c:
        ok(c.post("/v1/trust-domains", json={"name": "example.org"}), 201)
        r = c.post("/v1/trust-domains", json={"name": "example.org"})
        assert r.status_code == 409 and "already exists" in r.json()["message"]
        r = c.post("/v1/trust-domains", json={"name": "Not A Domain!"})
        assert r.status_code == 400 and "trust domain name" in r.json()["message"]
        r = c.post(
            "/v1/trust-domain-deployments", json={"name": "x", "trust_domain_id": "td-missing"}
        )
        assert r.status_code == 404 and "td-missing" in r.json()["message"]
