"""Every answer of the control plane names it (`Spirl-Api-Version`), and `not_found` means an
object is missing, never that a route is: the Terraform provider drops state on nothing else."""

from __future__ import annotations

import httpx

from controlplane.api.identity import API_VERSION, API_VERSION_HEADER

from support.api import make_topology, ok


def test_every_response_names_the_control_plane(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        responses = {
            "success": c.get(f"/v1/clusters/{ids['cluster']}"),
            "created": c.post("/v1/trust-domains", json={"name": "other.test"}),
            "missing object": c.get("/v1/clusters/c-000000000000"),
            "bad request": c.post("/v1/trust-domains", json={"name": "Not A Name"}),
            "unknown route": c.get("/api/v1/clusters/" + ids["cluster"]),
            "wrong method": c.patch(f"/v1/clusters/{ids['cluster']}"),
            "long-poll error": c.get("/v1/servers/tds-000000000000/sync"),
        }
        responses["no token"] = httpx.get(f"{live_api.url}/v1/trust-domains")
        responses["health"] = httpx.get(f"{live_api.url}/healthz")
    for what, response in responses.items():
        assert response.headers.get(API_VERSION_HEADER) == API_VERSION, what
    assert ok(responses["success"])["id"] == ids["cluster"]


def test_not_found_is_for_objects_not_routes(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        gone = c.get("/v1/clusters/c-000000000000")
        assert gone.status_code == 404 and gone.json()["error"] == "not_found"
        for path in (
            f"/api/v1/clusters/{ids['cluster']}",  # a wrong path prefix
            f"/v2/clusters/{ids['cluster']}",
            f"/v1/cluster/{ids['cluster']}",
        ):
            response = c.get(path)
            assert response.status_code == 404, path
            try:
                code = response.json().get("error")
            except ValueError:
                code = None  # not JSON at all: fine, it is not `not_found` either
            assert code != "not_found", path
