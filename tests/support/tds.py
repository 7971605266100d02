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
    """Start `spirl-tds run` (local API on its Unix socket) with a fast rotator tick and the
    shared simulated clock."""
    data_dir = tmp / f"tds-{name}"
    args = tds_args(cp, tdd_id=tdd_id, data_dir=data_dir, name=name, clock=clock)
    args += ["--cluster", cluster_id, *extra_args]
    if join:
        args += ["--join-token", join_token(cp, tdd_id)]
    proc = start_process(args, log_path=tmp / f"tds-{name}.log", env=env)
    assert proc.announcement["pid"] == proc.pid
    return Tds.started(proc, data_dir, args)


def tds_args(
    cp: ControlPlane, *, tdd_id: str, data_dir: Path, name: str, clock: SimClock
) -> list[str]:
    """`spirl-tds run` for a test: the simulated clock, a fast rotator tick."""
    return [
        script("spirl-tds"),
        "run",
        "--endpoint",
        cp.url,
        "--trust-domain-deployment",
        tdd_id,
        "--data-dir",
        str(data_dir),
        "--name",
        name,
        "--clock-file",
        str(clock.path),
        "--rotate-interval",
        "0.1",
    ]


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
    server_id: str
    data_dir: Path
    args: list[str] = field(default_factory=list)
    socket: str | None = None  # the local API's Unix socket (the default listener)
    url: str | None = None  # with --listen: the TCP URL, which needs `token`
    token: str | None = None

    @classmethod
    def started(cls, process: RunningProcess, data_dir: Path, args: list[str]) -> Tds:
        """From the JSON line `spirl-tds run` prints when it serves."""
        line = process.announcement
        token = None
        if "token_file" in line:
            token = Path(line["token_file"]).read_text().strip()
        return cls(
            process,
            line["server_id"],
            data_dir,
            args,
            socket=line.get("socket"),
            url=line.get("listen"),
            token=token,
        )

    def client(self, timeout: float = 10) -> httpx.Client:
        """An HTTP client for the local API, over whichever listener the server has."""
        if self.socket is not None:
            return httpx.Client(
                transport=httpx.HTTPTransport(uds=self.socket),
                base_url="http://tds",
                timeout=timeout,
            )
        assert self.url is not None and self.token is not None
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout
        )

    def get(self, path: str) -> httpx.Response:
        with self.client() as c:
            return c.get(path)

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        with self.client() as c:
            return c.post(path, json=body)

    def status(self) -> dict[str, Any]:
        return self.get("/v1/status").json()  # type: ignore[no-any-return]

    def bundle(self) -> dict[str, Any]:
        return self.get("/v1/bundle").json()  # type: ignore[no-any-return]

    def metrics(self) -> str:
        return self.get("/metrics").text

    def jwt(self, path: str, ttl: str = "5m", audience: str = "aud") -> str:
        r = self.post(
            "/v1/svid/jwt",
            {"spiffe_id": f"spiffe://{TD}/{path}", "audience": [audience], "ttl": ttl},
        )
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    def x509(self, path: str, ttl: str = "5m") -> list[x509.Certificate]:
        return self.x509_with_key(path, ttl)[0]

    def x509_with_key(
        self, path: str, ttl: str = "5m"
    ) -> tuple[list[x509.Certificate], ec.EllipticCurvePrivateKey]:
        """An X.509-SVID (leaf first) and the private key its CSR was made with."""
        csr, key = new_csr()
        r = self.post(
            "/v1/svid/x509", {"spiffe_id": f"spiffe://{TD}/{path}", "csr": csr, "ttl": ttl}
        )
        assert r.status_code == 200, r.text
        return x509.load_pem_x509_certificates(r.json()["certificates"].encode()), key

    def stop(self) -> None:
        self.process.stop()

    def restarted(self, log_path: Path, env: dict[str, str] | None = None) -> Tds:
        """Stop this server (by pid; a no-op if stopped already) and start it again on its data
        folder, without its join token: it registered at its first start."""
        self.stop()
        args = list(self.args)
        if "--join-token" in args:
            i = args.index("--join-token")
            del args[i : i + 2]
        again = Tds.started(start_process(args, log_path=log_path, env=env), self.data_dir, args)
        assert again.server_id == self.server_id
        return again


def new_csr() -> tuple[str, ec.EllipticCurvePrivateKey]:
    """A PEM certificate signing request for a fresh P-256 key, and the key."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    return csr, key


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
    """Path validation (cryptography) of the leaf to the bundle's X.509 authorities."""
    roots = [
        x509.load_der_x509_certificate(base64.b64decode(k["x5c"][0]))
        for k in bundle["keys"]
        if k.get("use") == "x509-svid"
    ]
    verifier = PolicyBuilder().store(Store(roots)).time(at).build_client_verifier()
    verifier.verify(chain[0], [])


def jwt_kids(bundle: dict[str, Any]) -> set[str]:
    """Kids of a bundle's JWT signing keys (X.509 CA entries carry none)."""
    return {str(k["kid"]) for k in bundle["keys"] if k.get("use") == "jwt-svid"}


def ca_certificates(bundle: dict[str, Any]) -> set[str]:
    """The CA certificates (base64 DER) of a bundle's X.509 entries."""
    return {str(k["x5c"][0]) for k in bundle["keys"] if k.get("use") == "x509-svid"}


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])
