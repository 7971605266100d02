"""Azure Key Vault scenarios with real processes: a control plane, spirl-tds servers and Key
Vault emulator processes the unmodified Azure SDK in the servers talks to (Workload Identity
through the emulator's Entra ID). Shared by the e2e test files so they hold scenarios.

Time jumps move the servers' hidden --clock-file and the emulators' clock offset together, so
`created`/`updated` of Key Vault keys follow the same simulated time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from azure.keyvault.keys import KeyClient, KeyProperties

from controlplane.emulators.keyvault import EmulatorProcess, start_emulator

from support.api import make_topology
from support.controlplane import ControlPlane, start_control_plane
from support.kv_sdk import SdkFactory
from support.tds import TD, SimClock, Tds, start_tds

APP = "tds-workload-app"  # the servers' Workload Identity
ADMIN = "kv-admin"
ADMIN_SECRET = "kv-admin-secret"
SHARED = {
    "keyNameTemplate": "spire-{{ .TrustDomain | sha256sum | trunc 8 }}-{{ .KeyID }}",
    "keyIdExtractionRegex": "^spire-[0-9a-f]{8}-(.+)$",
}


@dataclass
class Vault:
    emu: EmulatorProcess
    admin: KeyClient

    @property
    def url(self) -> str:
        return self.emu.vault_url

    def listed(self) -> list[KeyProperties]:
        return list(self.admin.list_properties_of_keys())


@dataclass
class AzureEnv:
    tmp: Path
    cp: ControlPlane
    clock: SimClock
    tenant_dir: Path
    td_id: str
    tdd_id: str
    cluster_id: str
    vaults: list[Vault] = field(default_factory=list)
    servers: list[Tds] = field(default_factory=list)
    sdk_env: dict[str, str] = field(default_factory=dict)

    def start_vault(
        self, name: str, sku: str = "premium", limits: dict[str, float] | None = None
    ) -> Vault:
        emu = start_emulator(
            self.tmp / f"vault-{name}",
            tenant_dir=self.tenant_dir,
            sku=sku,
            principals={APP: ["crypto-officer", "crypto-user"], ADMIN: ["administrator"]},
            limits=limits,
        )
        emu.control.add_principal(ADMIN, client_secret=ADMIN_SECRET)
        emu.control.set_clock_offset(self.clock.offset.total_seconds())
        sdk = SdkFactory(emu)
        vault = Vault(emu, sdk.key_client(sdk.secret_credential(ADMIN, ADMIN_SECRET)))
        self.vaults.append(vault)
        if not self.sdk_env:
            # One tenant for every vault: the first vault's Entra ID serves them all.
            self.sdk_env = emu.sdk_env(APP)
        return vault

    def jump_to(self, offset: timedelta) -> None:
        # Vaults first: keys a server makes after its jump must carry the new time.
        for vault in self.vaults:
            vault.emu.control.set_clock_offset(offset.total_seconds())
        self.clock.jump_to(offset)

    def start_tds(self, name: str, *identifier: str) -> Tds:
        tds = start_tds(
            self.cp,
            tdd_id=self.tdd_id,
            cluster_id=self.cluster_id,
            tmp=self.tmp,
            name=name,
            clock=self.clock,
            extra_args=identifier,
            env=self.sdk_env,
        )
        self.servers.append(tds)
        return tds

    def restart_tds(self, tds: Tds) -> Tds:
        """Stop a server (by pid; a no-op if stopped already) and start it again on its data
        folder (no join token: it registered at its first start)."""
        self.servers.remove(tds)
        runs = len(list(self.tmp.glob(f"{tds.data_dir.name}*.log")))
        again = tds.restarted(self.tmp / f"{tds.data_dir.name}-{runs}.log", env=self.sdk_env)
        self.servers.append(again)
        return again

    def set_config(self, yaml_text: str) -> int:
        """The vendor's step: spirlctl config set trust-domain-deployment --id <tdd> file."""
        path = self.tmp / f"config-{time.monotonic_ns()}.yaml"
        path.write_text(yaml_text)
        out = self.cp.spirlctl(
            "config", "set", "trust-domain-deployment", "--id", self.tdd_id, str(path), "-o", "json"
        )
        return int(json.loads(out.stdout)["version"])

    def cp_bundle(self) -> dict[str, Any]:
        return httpx.get(f"{self.cp.url}/v1/trust-domains/{self.td_id}/bundle", timeout=10).json()


@contextmanager
def azure_env(tmp_path: Path) -> Iterator[AzureEnv]:
    """A control plane and a trust domain topology; vaults and servers started by the test are
    stopped (by pid) at the end."""
    cp = start_control_plane(tmp_path)
    env: AzureEnv | None = None
    try:
        ids = make_topology(cp.client(), TD)
        env = AzureEnv(
            tmp_path,
            cp,
            SimClock(tmp_path / "clock"),
            tmp_path / "tenant",
            ids["td"],
            ids["tdd"],
            ids["cluster"],
        )
        yield env
    finally:
        if env is not None:
            for s in env.servers:
                s.stop()
            for v in env.vaults:
                v.emu.stop()
        cp.stop()


def key_manager_doc(azure: dict[str, Any] | None) -> str:
    spec = {"extensions": {"azureKeyVault": azure} if azure else {}}
    return json.dumps({"section": "KeyManager", "schema": "v1", "spec": spec}) + "\n"


def lifecycle_doc(x509: str, jwt_ttl: str) -> str:
    return (
        f"section: KeyLifecycle\nschema: v1\nspec:\n  x509CATTL: {x509}\n  jwtKeyTTL: {jwt_ttl}\n"
    )


def keys_of(tds: Tds, **match: str) -> list[dict[str, Any]]:
    """The server's keys (its status) with fields equal to `match` ("type": key manager)."""
    return [
        k
        for k in tds.status()["keys"]
        if all((k["key_manager"]["type"] if f == "type" else k[f]) == v for f, v in match.items())
    ]
