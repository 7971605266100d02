"""Trust domain server processes for end-to-end tests: start them, talk to them, verify their SVIDs.

Shared by tests/e2e (webhook and Azure Key Vault scenarios) so each test file holds scenarios,
not plumbing. Time jumps go through the servers' hidden --clock-file flag.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store

from support.controlplane import ControlPlane
from support.processes import RunningProcess, script, start_process

TD = "example.org"


def join_token(cp: ControlPlane, tdd_id: str) -> str:
    response = cp.client().post(
        f"/v1/trust-domain-deployments/{tdd_id}/join-tokens", json={"ttl_seconds": 600}
    )
    response.raise_for_status()
    return str(response.json()["token"])


def start_tds(
    cp: ControlPlane,
    *,
    tdd_id: str,
    cluster_id: str,
    tmp: Path,
    name: str,
    clock: SimClock,
    join: bool = True,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Tds:
    """Start `spirl-tds run` on a free port with a fast rotator tick and the shared simulated clock."""
    data_dir = tmp / f"tds-{name}"
    args = [
        script("spirl-tds"),
        "run",
        "--endpoint",
        cp.url,
        "--trust-domain-deployment",
        tdd_id,
        "--cluster",
        cluster_id,
        "--data-dir",
        str(data_dir),
        "--listen",
        "127.0.0.1:0",
        "--name",
        name,
        "--clock-file",
        str(clock.path),
        "--rotate-interval",
        "0.1",
        *extra_args,
    ]
    if join:
        args += ["--join-token", join_token(cp, tdd_id)]
    proc = start_process(args, log_path=tmp / f"tds-{name}.log", env=env)
    assert proc.announcement["pid"] == proc.pid
    return Tds(proc, proc.announcement["listen"], proc.announcement["server_id"], data_dir, args)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class SimClock:
    """The offset file every server of a test reads its clock from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = timedelta(0)
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(self.offset.total_seconds()))
        os.replace(tmp, self.path)

    def jump_to(self, offset: timedelta) -> None:
        self.offset = offset
        self._write()
        time.sleep(0.15)  # servers re-read the file every 50 ms

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Tds:
    process: RunningProcess
    url: str
    server_id: str
    data_dir: Path
    args: list[str] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/v1/status", timeout=10).json()

    def bundle(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/v1/bundle", timeout=10).json()

    def jwt(self, path: str, ttl: str = "5m") -> str:
        r = httpx.post(
            f"{self.url}/v1/svid/jwt",
            timeout=10,
            json={"spiffe_id": f"spiffe://{TD}/{path}", "audience": ["aud"], "ttl": ttl},
        )
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    def x509(self, path: str, ttl: str = "5m") -> list[x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
            .decode()
        )
        r = httpx.post(
            f"{self.url}/v1/svid/x509",
            timeout=10,
            json={"spiffe_id": f"spiffe://{TD}/{path}", "csr": csr, "ttl": ttl},
        )
        assert r.status_code == 200, r.text
        return x509.load_pem_x509_certificates(r.json()["certificates"].encode())

    def stop(self) -> None:
        self.process.stop()


def verify_jwt(token: str, bundle: dict[str, Any], at: datetime) -> None:
    kid = jwt.get_unverified_header(token)["kid"]
    keys = {k["kid"]: k for k in bundle["keys"] if k.get("use") == "jwt-svid"}
    assert kid in keys, f"JWT key {kid} missing from bundle"
    key = jwt.PyJWK.from_json(json.dumps(keys[kid]))
    claims = jwt.decode(
        token,
        key.key,
        algorithms=[key.algorithm_name],
        audience="aud",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["exp"] > at.timestamp(), "verifying an expired SVID"


def verify_x509(chain: list[x509.Certificate], bundle: dict[str, Any], at: datetime) -> None:
    roots = [
        x509.load_der_x509_certificate(base64.b64decode(k["x5c"][0]))
        for k in bundle["keys"]
        if k.get("use") == "x509-svid"
    ]
    verifier = PolicyBuilder().store(Store(roots)).time(at).build_client_verifier()
    verifier.verify(chain[0], [])


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])
