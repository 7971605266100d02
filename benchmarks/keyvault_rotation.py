"""Key Vault calls per key rotation per server, against the loopback Key Vault emulator.

    .venv/bin/python benchmarks/keyvault_rotation.py [--days 10] [--lifetime 6h]

In-process trust domain servers on a simulated clock (the emulator's clock moved with it) use
the Azure Key Vault key manager through the unmodified SDK; every call they make is one line
of the emulator's audit log (AuditEvent), attributed to the server by its identity. The
servers rotate for `--days` days of simulated time in 5-minute ticks, with the rotator's
housekeeping on (refresh every 6 h, cleanup every 48 h). Reported per key generation (one
rotation of one kind on one server) and per server per day for housekeeping:

- standard mode, one server;
- shared keys mode, two servers sharing the JWT key.

The baseline is SPIRE's azure_key_vault plugin (pkg/server/plugin/keymanager/azurekeyvault):
per rotation one CreateKey and one DeleteKey (of the key the slot replaces); every 6 h one
GetKey and one UpdateKey per key in use; every 48 h one listing. The CA certificate's self
signature is one Sign in both. Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import secrets
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controlplane.documents.durations import parse_duration
from controlplane.emulators.keyvault import EmulatorProcess, start_emulator
from controlplane.keymanagers import key_manager_digest
from controlplane.keymanagers.azure_key_vault import AzureKeyVaultKeyManager
from controlplane.trust_domain_server.clock import ManualClock
from controlplane.trust_domain_server.server import TrustDomainServer

TD = "bench.example.org"
TICK = timedelta(minutes=5)
SHARED = {
    "keyNameTemplate": "spire-{{ .TrustDomain | sha256sum | trunc 8 }}-{{ .KeyID }}",
    "keyIdExtractionRegex": "^spire-[0-9a-f]{8}-(.+)$",
}
ROTATION_OPS = ("KeyCreate", "KeyDelete", "KeyPurge", "KeyGet", "KeyListVersions", "KeySign")


@dataclass
class Server:
    app: str
    server: TrustDomainServer
    managers: list[AzureKeyVaultKeyManager]


def make_server(emu: EmulatorProcess, tmp: Path, name: str, clock: ManualClock) -> Server:
    app = str(uuid.uuid4())
    secret = secrets.token_urlsafe(16)
    emu.control.add_principal(app, ["Key Vault Crypto Officer"], client_secret=secret)
    secret_file = tmp / f"secret-{name}"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    managers: list[AzureKeyVaultKeyManager] = []

    def build(spec: Any) -> AzureKeyVaultKeyManager:
        config = {
            **spec["extensions"]["azureKeyVault"],
            "credentials": {
                "clientSecret": {
                    "tenantID": emu.tenant_id,
                    "clientID": app,
                    "clientSecretFile": str(secret_file),
                }
            },
        }
        manager = AzureKeyVaultKeyManager(
            config,
            trust_domain=TD,
            server_id=f"server-{name}",
            clock=clock.now,
            connection_verify=emu.ca_file,
            authority_host=emu.authority_host,
        )
        managers.append(manager)
        return manager

    server = TrustDomainServer(TD, clock, build, key_manager_digest)
    return Server(app, server, managers)


def config(azure: dict[str, Any], lifetime: str) -> dict[str, Any]:
    return {
        "version": 1,
        "sections": {
            "KeyManager": {
                "document": {
                    "section": "KeyManager",
                    "schema": "v1",
                    "spec": {"extensions": {"azureKeyVault": azure}},
                }
            },
            "KeyLifecycle": {
                "document": {
                    "section": "KeyLifecycle",
                    "schema": "v1",
                    "spec": {"x509CATTL": lifetime, "jwtKeyTTL": lifetime},
                }
            },
        },
    }


def run(emu: EmulatorProcess, tmp: Path, shared: bool, days: int, lifetime: str) -> dict[str, Any]:
    emu.control.set_clock_offset(0)  # the vault's clock is the servers' clock
    clock = ManualClock(datetime.now(UTC))
    azure: dict[str, Any] = {"vaultURL": emu.vault_url}
    if shared:
        azure["sharedKeys"] = SHARED
    tag = "shared" if shared else "standard"
    servers = [make_server(emu, tmp, f"{tag}-{i}", clock) for i in range(2 if shared else 1)]
    for s in servers:
        if not s.server.apply_config(config(azure, lifetime)):
            raise RuntimeError(f"config not applied: {s.server.error}")
    since = len(emu.control.audit())  # after the pre-swap checks
    for s in servers:
        s.server.set_bundle({"keys": []})  # a bundle arrived: cleanup may run
    seen: list[set[str]] = [set() for _ in servers]  # every key generation of each server
    ticks = int(timedelta(days=days) / TICK)
    for _ in range(ticks):
        emu.control.set_clock_offset((clock.now() - datetime.now(UTC)).total_seconds())
        for i, s in enumerate(servers):
            s.server.rotate()
            seen[i].update(r.kid for r in s.server.keyring.records())
        clock.advance(TICK)
    events = emu.control.audit(since)
    for s in servers:
        s.server.close()
    ops: dict[str, Counter[str]] = {s.app: Counter() for s in servers}
    for e in events:
        app = ((e.get("identity") or {}).get("claim") or {}).get("appid")
        if app in ops:
            ops[app][e["operationName"]] += 1
    return {
        "mode": tag,
        "days": days,
        "generations": [len(k) for k in seen],
        "ops": [ops[s.app] for s in servers],
    }


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"Command: `.venv/bin/python benchmarks/keyvault_rotation.py --days {args.days} "
        f"--lifetime {args.lifetime}`",
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; emulator process on 127.0.0.1 (HTTPS).",
        "",
        f"{args.days} simulated days, key lifetime {args.lifetime} (a new key of each kind every "
        f"{parse_duration(args.lifetime) / 2}), 5-minute rotator ticks; Key Vault calls from the "
        "emulator's audit log, per server.",
        "",
        "| mode | server | generations | "
        + " | ".join(f"{op} / gen" for op in ROTATION_OPS)
        + " | KeyUpdate / day | KeyList + deleted / day | all / gen |",
        "|---|---|---|" + "---|" * (len(ROTATION_OPS) + 3),
    ]
    for r in results:
        for i, (gens, ops) in enumerate(zip(r["generations"], r["ops"], strict=True)):
            per_gen = " | ".join(f"{ops[op] / gens:.2f}" for op in ROTATION_OPS)
            total = sum(ops.values())
            lines.append(
                f"| {r['mode']} | {i} | {gens:.0f} | {per_gen} | "
                f"{ops['KeyUpdate'] / r['days']:.1f} | "
                f"{(ops['KeyList'] + ops['KeyListDeleted']) / r['days']:.2f} | "
                f"{total / gens:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--lifetime", default="6h")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        # Simulated minutes pass in microseconds here; a deletion (seconds in Azure) is long
        # done when the release retries its purge a simulated minute later: no delay.
        emu = start_emulator(
            tmp / "kv",
            log_level="WARNING",
            limits={"hsm_create": 1000},
            soft_delete={"delete_delay": 0, "recover_delay": 0},
        )
        try:
            results = [
                run(emu, tmp, shared=False, days=args.days, lifetime=args.lifetime),
                run(emu, tmp, shared=True, days=args.days, lifetime=args.lifetime),
            ]
        finally:
            emu.stop()
    print(report(results, args))


if __name__ == "__main__":
    main()
