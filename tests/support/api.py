"""Small helpers for API tests."""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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


def shared_keys_key_manager(regex: str) -> str:
    """A KeyManager in Key Vault shared-keys mode with the dashed trust domain template and
    `regex` as keyIdExtractionRegex (checked against the scope's trust domain)."""
    return (
        "section: KeyManager\nschema: v1\nspec:\n  extensions:\n    azureKeyVault:\n"
        '      vaultURL: "https://v.vault.azure.net/"\n      sharedKeys:\n'
        '        keyNameTemplate: \'spire-{{ .TrustDomain | replace "." "-" }}-{{ .KeyID }}\'\n'
        f"        keyIdExtractionRegex: '{regex}'\n"
    )


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
    client: httpx.Client, tdd: str, cluster: str | None = None, name: str = "srv"
) -> dict[str, Any]:
    """A server registered through `client` (an admin's: it issues the join token; the
    registration itself carries the join token, whatever the client's own header)."""
    join = ok(client.post(f"/v1/trust-domain-deployments/{tdd}/join-tokens", json={}), 201)
    body: dict[str, Any] = {"name": name}
    if cluster:
        body["cluster_id"] = cluster
    return ok(
        client.post(
            "/v1/servers/register",
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


def jwt_key(kid: str, not_after: datetime | None = None) -> dict[str, Any]:
    """A status report's key entry: a fresh EC P-256 public key under `kid`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from controlplane.keymanagers.signatures import public_jwk

    der = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return {
        "kid": kid,
        "kind": "jwt",
        "key_manager": {"type": "default"},
        "state": "active",
        "not_after": (not_after or datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "jwk": public_jwk(der),
    }


FIXED_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}


def status_report(
    key_kid: str | None = None,
    not_after: datetime | None = None,
    *,
    version: int | None = 1,
    keys: list[dict[str, Any]] | None = None,
    health: str = "HEALTHY",
    error: str | None = None,
    refused_version: int | None = None,
    applied_version: int | None = None,
) -> dict[str, Any]:
    """The body a trust domain server posts to /v1/servers/{id}/status: with `key_kid`, holding
    one JWT key (always the same public key) under that kid; else holding `keys`."""
    now = datetime.now(UTC)
    if key_kid is not None:
        keys = [
            {
                "kid": key_kid,
                "kind": "jwt",
                "key_manager": "default",
                "state": "active",
                "not_after": (not_after or now + timedelta(hours=1)).isoformat(),
                "jwk": dict(FIXED_JWK),
            }
        ]
    return {
        "desired_version": version,
        "attempted_version": version,
        "attempted_at": now.isoformat(),
        "applied_version": version if applied_version is None else applied_version,
        "applied_at": now.isoformat(),
        "health": health,
        "error": error,
        "refused_version": refused_version,
        "key_manager": {"type": "default", "digest": "sha256:00"},
        "keys": keys or [],
    }


def post_status(url: str, server: dict[str, Any], report: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/servers/{server['server_id']}/status",
        json=report,
        headers={"Authorization": f"Bearer {server['credential']}"},
        timeout=30,
    )


def sync(
    url: str,
    server: dict[str, Any],
    config_version: int | None = None,
    bundle_version: int | None = None,
    wait: float = 0,
    verify: ssl.SSLContext | bool = True,
) -> httpx.Response:
    """One long-poll of a server (`wait` seconds at most when its versions are current)."""
    params = {"wait": wait, "config_version": config_version, "bundle_version": bundle_version}
    return httpx.get(
        f"{url}/v1/servers/{server['server_id']}/sync",
        params={k: v for k, v in params.items() if v is not None},
        headers={"Authorization": f"Bearer {server['credential']}"},
        timeout=wait + 30,
        verify=verify,
    )


def poll_after(
    url: str,
    server: dict[str, Any],
    reply: dict[str, Any] | None,
    wait: float,
    verify: ssl.SSLContext | bool = True,
) -> dict[str, Any]:
    """The body of the long-poll that follows `reply` (the previous one's body; None: the
    first, which answers at once)."""
    config = reply["config"]["version"] if reply else None
    bundle = reply["bundle"]["version"] if reply else None
    return ok(sync(url, server, config, bundle, wait, verify))
