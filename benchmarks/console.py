"""Web console page weight and render time at 100 servers and 1,000 config versions.

    .venv/bin/python benchmarks/console.py [--servers 100] [--versions 1000] [--repeat 30]

Builds a SQLite database through the services layer: one trust domain, one deployment with four
clusters, `--servers` servers that each reported six keys (per kind one retired, one active, one
prepared; Key Vault key ids, CA certificates of a realistic size) and, for one in ten, a long
error; `--versions` config versions of the deployment (KeyManager + KeyLifecycle). Then starts
`spirl-controlplane serve` on it as a process, signs in to the console, and requests every
console page `--repeat` times (after 3 warm-ups) with one keep-alive client.

For each page: its size (uncompressed bytes), and its time rendered server-side, read from the
control plane's own request log (`duration_ms`: routing, the service calls, the template), as
p50/p95; the control plane's CPU time per request (from /proc: what the page costs whatever else
the machine runs); the client-observed p50 too. The baseline, measured in the same run and the same way,
is the JSON API call that returns the same data (e.g. the servers list for the servers page).
Goals: each page < 200 KB and rendered in < 100 ms server-side (p50). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from controlplane.domain import utc_now  # noqa: E402
from controlplane.keymanagers.signatures import public_jwk  # noqa: E402
from controlplane.services import auth, objects, servers  # noqa: E402
from controlplane.services import config as config_service  # noqa: E402
from controlplane.store.database import create_db_engine, migrate  # noqa: E402
from controlplane.store.unit_of_work import UnitOfWorkFactory  # noqa: E402
from controlplane.trust_domain_server.crypto import CA_KEY_USAGE  # noqa: E402

from support.api import console_session  # noqa: E402
from support.processes import script, start_process  # noqa: E402

DEPLOYMENT = "trust-domain-deployment"
DOCUMENT = """\
section: KeyManager
schema: v1
spec:
  extensions:
    azureKeyVault:
      vaultURL: "https://vault-{n}.vault.azure.net/"
      keyTags:
        team: identity
        change: "{n}"
---
section: KeyLifecycle
schema: v1
spec:
  x509CATTL: {ttl}h
  jwtKeyTTL: 12h
"""
TRUST_DOMAIN = "bench.example.org"


def public_key(not_before: datetime, not_after: datetime, ca: bool) -> dict[str, Any]:
    """A fresh EC P-256 key as a server reports it: its JWK and, for an X.509 CA key, the one
    self-signed CA certificate the control plane checks (controlplane/reported_keys.py)."""
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    entry: dict[str, Any] = {"jwk": public_jwk(der)}
    if ca:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(CA_KEY_USAGE, critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"spiffe://{TRUST_DOMAIN}")]
                ),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        entry["x5c"] = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    return entry


ERROR = (
    "Key Vault https://vault-1.vault.azure.net/: (Forbidden) Caller is not authorized to perform "
    "action on resource. If role assignments, deny assignments or role definitions were changed "
    "recently, please observe propagation time. Caller: appid=...; Action: "
    "'Microsoft.KeyVault/vaults/keys/create/action'; Code: ForbiddenByRbac" * 2
)


def populate(engine: Any, n_servers: int, n_versions: int) -> tuple[str, dict[str, str]]:
    """(admin token, ids) of a deployment with n_servers reporting servers and n_versions versions."""
    uows = UnitOfWorkFactory(engine)
    with uows() as uow:
        token, _ = auth.create_token(uow, "admin", "bench")
    with uows() as uow:
        td = objects.create_trust_domain(uow, TRUST_DOMAIN, "admin:bench")
    with uows() as uow:
        tdd = objects.create_deployment(uow, "prod", td["id"], "admin:bench")
    clusters = []
    for name in ("east", "west", "north", "south"):
        with uows() as uow:
            clusters.append(objects.create_cluster(uow, name, tdd["id"], "admin:bench")["id"])
    for n in range(1, n_versions + 1):
        with uows() as uow:
            uploaded = config_service.parse_upload(DOCUMENT.format(n=n, ttl=24 + n % 7), DEPLOYMENT)
            config_service.set_config(uow, DEPLOYMENT, tdd["id"], uploaded, actor="admin:bench")
    now = utc_now()
    for i in range(n_servers):
        with uows() as uow:
            join = auth.create_join_token(uow, tdd["id"], 600, "admin:bench")
        with uows() as uow:
            server = auth.register_server(
                uow, join["token"], f"tds-{i:03d}", clusters[i % len(clusters)]
            )
        keys = []
        for kind in ("x509-ca", "jwt"):
            for state, born in (("retired", -20), ("active", -8), ("prepared", -1)):
                kid = f"{kind}-{i:03d}{state[:3]}{os.urandom(3).hex()}"
                not_before = (now + timedelta(hours=born)).replace(microsecond=0)
                not_after = not_before + timedelta(hours=24)
                key: dict[str, Any] = {
                    "kid": kid,
                    "kind": kind,
                    "state": state,
                    "key_manager": {"type": "azureKeyVault", "digest": "sha256:" + "ab" * 32},
                    "key_type": "ec-p256",
                    "not_before": not_before.isoformat(),
                    "not_after": not_after.isoformat(),
                    "provider_ref": f"https://vault-1.vault.azure.net/keys/spire-key-{kid}/"
                    + os.urandom(16).hex(),
                    **public_key(not_before, not_after, ca=kind == "x509-ca"),
                }
                keys.append(key)
        report = {
            "desired_version": n_versions,
            "attempted_version": n_versions,
            "attempted_at": now.isoformat(),
            "applied_version": n_versions if i % 10 else n_versions - 1,
            "applied_at": now.isoformat(),
            "health": "UNHEALTHY" if i % 10 == 0 else "HEALTHY",
            "error": ERROR if i % 10 == 0 else None,
            "key_manager": {"type": "azureKeyVault", "digest": "sha256:" + "ab" * 32},
            "keys": keys,
            "reported_at": now.isoformat(),
        }
        with uows() as uow:
            servers.report_status(uow, server["server_id"], report)
    return token, {"td": td["id"], "tdd": tdd["id"], "cluster": clusters[0]}


@dataclass
class Measure:
    size: int
    server_ms: list[float]
    client_ms: list[float]
    cpu_ms: float  # the control plane's CPU time per request (user + system)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request_durations(log_path: Path, path: str) -> list[float]:
    """duration_ms of the control plane's request log lines for one path (query string dropped)."""
    out = []
    for line in log_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("message") == "request" and entry.get("path") == path:
            out.append(float(entry["duration_ms"]))
    return out


def measure(client: httpx.Client, url: str, repeat: int, log_path: Path, pid: int) -> Measure:
    path = url.split("?")[0]
    before = len(request_durations(log_path, path))
    size = 0
    client_ms = []
    cpu_start = 0.0
    for i in range(repeat + 3):
        if i == 3:
            cpu_start = cpu_seconds(pid)
        start = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - start) * 1000
        assert response.status_code == 200, (url, response.status_code, response.text[:300])
        size = len(response.content)
        if i >= 3:
            client_ms.append(elapsed)
    cpu_ms = (cpu_seconds(pid) - cpu_start) * 1000 / repeat
    time.sleep(0.3)  # the log line is written after the response
    server_ms = request_durations(log_path, path)[before + 3 :]
    return Measure(size, server_ms, client_ms, cpu_ms)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="console-bench-"))
    data = tmp / "data"
    data.mkdir()
    engine = create_db_engine(f"sqlite:///{data / 'controlplane.db'}")
    migrate(engine)
    started = time.perf_counter()
    token, ids = populate(engine, args.servers, args.versions)
    engine.dispose()
    print(f"populated in {time.perf_counter() - started:.1f}s ({tmp})", file=sys.stderr)

    log_path = tmp / "controlplane.log"
    proc = start_process(
        [script("spirl-controlplane"), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data)],
        log_path=log_path,
    )
    base = proc.announcement["url"]
    td, tdd, cluster = ids["td"], ids["tdd"], ids["cluster"]
    v = args.versions
    cfg = f"/config/{DEPLOYMENT}/{tdd}"
    pages = [  # (page, console URL, the JSON API call that returns the same data)
        ("trust domains", "/ui/", "/v1/trust-domains"),
        ("trust domain", f"/ui/trust-domains/{td}", f"/v1/trust-domains/{td}"),
        ("trust bundle", f"/ui/trust-domains/{td}/bundle", f"/v1/trust-domains/{td}/bundle"),
        (
            "deployment + servers",
            f"/ui/deployments/{tdd}",
            f"/v1/trust-domain-deployments/{tdd}/servers",
        ),
        (
            "servers (live refresh)",
            f"/ui/deployments/{tdd}/servers/fragment",
            f"/v1/trust-domain-deployments/{tdd}/servers",
        ),
        (
            "key timeline",
            f"/ui/deployments/{tdd}/timeline",
            f"/v1/trust-domain-deployments/{tdd}/servers",
        ),
        (
            "key timeline (live refresh)",
            f"/ui/deployments/{tdd}/timeline/fragment",
            f"/v1/trust-domain-deployments/{tdd}/servers",
        ),
        (
            "cluster",
            f"/ui/clusters/{cluster}",
            f"/v1/effective-config?trust_domain_deployment_id={tdd}&cluster_id={cluster}",
        ),
        ("config + history", f"/ui{cfg}", f"/v1{cfg}/history?limit=50"),
        (
            "config, oldest history page",
            f"/ui{cfg}?before=51",
            f"/v1{cfg}/history?limit=50&before=51",
        ),
        ("version YAML", f"/ui{cfg}/versions/{v // 2}", f"/v1{cfg}/versions/{v // 2}"),
        ("diff", f"/ui{cfg}/diff?from=1&to={v}", f"/v1{cfg}/diff?from=1&to={v}"),
        ("rollback confirm", f"/ui{cfg}/rollback?version=1", f"/v1{cfg}/diff?from={v}&to=1"),
        ("audit log", "/ui/audit", "/v1/audit?limit=50"),
        (
            "audit log, filtered",
            f"/ui/audit?scope={DEPLOYMENT}&scope_id={tdd}&actor=bench",
            "/v1/audit?limit=50",
        ),
    ]
    rows = []
    try:
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        with api, console_session(base, token) as (console, _):
            for name, page_url, api_url in pages:
                page = measure(console, page_url, args.repeat, log_path, proc.pid)
                baseline = measure(api, api_url, args.repeat, log_path, proc.pid)
                rows.append((name, page, baseline))
    finally:
        proc.stop()

    print(
        f"\n{args.servers} servers (6 keys each), {args.versions} config versions; SQLite; "
        f"{args.repeat} requests per page after 3 warm-ups; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| page | size | server p50 / p95 | CPU per request | client p50 "
        "| JSON API: size, server p50, CPU | page / API (p50, CPU) | < 200 KB, p50 < 100 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, page, baseline in rows:
        p50, p95 = pct(page.server_ms, 0.5), pct(page.server_ms, 0.95)
        b50 = pct(baseline.server_ms, 0.5)
        ok = page.size < 200_000 and p50 < 100
        print(
            f"| {name} | {page.size / 1000:.1f} KB | {p50:.1f} / {p95:.1f} ms | "
            f"{page.cpu_ms:.1f} ms | {pct(page.client_ms, 0.5):.1f} ms | "
            f"{baseline.size / 1000:.1f} KB, {b50:.1f} ms, {baseline.cpu_ms:.1f} ms | "
            f"{p50 / b50:.2f}x, {page.cpu_ms / max(baseline.cpu_ms, 0.1):.2f}x | "
            f"{'yes' if ok else 'NO'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
