"""Small helpers for API tests."""

from __future__ import annotations

from typing import Any

import httpx

KEY_MANAGER_AZURE = """\
section: KeyManager
schema: v1
spec:
  extensions:
    azureKeyVault:
      vaultURL: "https://my-key-vault.vault.azure.net/"
"""

KEY_LIFECYCLE = """\
section: KeyLifecycle
schema: v1
spec:
  x509CATTL: 48h
  jwtKeyTTL: 12h
"""


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json() if response.content else None


def make_topology(client: httpx.Client, td_name: str = "example.org") -> dict[str, str]:
    td = ok(client.post("/v1/trust-domains", json={"name": td_name}), 201)
    tdd = ok(
        client.post(
            "/v1/trust-domain-deployments", json={"name": "prod", "trust_domain_id": td["id"]}
        ),
        201,
    )
    cluster = ok(
        client.post("/v1/clusters", json={"name": "east", "trust_domain_deployment_id": tdd["id"]}),
        201,
    )
    return {"td": td["id"], "tdd": tdd["id"], "cluster": cluster["id"]}


def put_config(
    client: httpx.Client, scope: str, scope_id: str, yaml_text: str, **options: Any
) -> httpx.Response:
    return client.put(f"/v1/config/{scope}/{scope_id}", json={"yaml": yaml_text, **options})


def register_server(
    client: httpx.Client, url: str, tdd: str, cluster: str | None = None, name: str = "srv"
) -> dict[str, Any]:
    join = ok(client.post(f"/v1/trust-domain-deployments/{tdd}/join-tokens", json={}), 201)
    body: dict[str, Any] = {"name": name}
    if cluster:
        body["cluster_id"] = cluster
    return ok(
        httpx.post(
            f"{url}/v1/servers/register",
            json=body,
            headers={"Authorization": f"Bearer {join['token']}"},
        ),
        201,
    )
