"""Small helpers for API tests."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
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


@contextlib.contextmanager
def console_session(base_url: str, token: str) -> Iterator[tuple[httpx.Client, str]]:
    """Sign in to the web console over plain HTTP as a browser does (the sign-in form with its
    nonce cookie); yields the client holding the session cookie and the session's CSRF token."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        form = client.get("/ui/login")
        nonce = re.search(r'name="login_nonce" value="([^"]+)"', form.text)
        assert nonce is not None, form.text
        signed = client.post(
            "/ui/login", data={"token": token, "login_nonce": nonce.group(1), "next": "/ui/"}
        )
        assert signed.status_code == 303, signed.text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get("/ui/").text)
        assert csrf is not None
        yield client, csrf.group(1)


def status_report(key_kid: str, not_after: datetime) -> dict[str, Any]:
    """A server's status report holding one JWT key (public key only)."""
    return {
        "desired_version": 1,
        "attempted_version": 1,
        "attempted_at": datetime.now(UTC).isoformat(),
        "applied_version": 1,
        "applied_at": datetime.now(UTC).isoformat(),
        "health": "HEALTHY",
        "error": None,
        "key_manager": {"type": "default", "digest": "sha256:00"},
        "keys": [
            {
                "kid": key_kid,
                "kind": "jwt",
                "key_manager": "default",
                "state": "active",
                "not_after": not_after.isoformat(),
                "jwk": {
                    "kty": "EC",
                    "crv": "P-256",
                    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
                },
            }
        ],
    }
