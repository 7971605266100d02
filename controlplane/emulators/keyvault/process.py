"""Run the emulator as a child process, for tests and the demo.

Example::

    with start_emulator(tmp_path / "kv", principals={"tds": ["crypto-officer", "crypto-user"]}) as emu:
        env = emu.sdk_env("tds")          # Workload Identity env for a child process
        emu.control.add_fault("throttle", count=3, retry_after=1)
"""

from __future__ import annotations

import os
import secrets
import shutil
import ssl
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from controlplane.processes import ProcessStartError, start_announced, stop_process

__all__ = ["ControlClient", "EmulatorError", "EmulatorProcess", "start_emulator"]


class EmulatorError(RuntimeError):
    """The emulator did not start, or a control call failed."""


class ControlClient:
    """Client of the emulator's `/_emulator/` control API."""

    def __init__(self, control_url: str, token: str, ca_file: str) -> None:
        import httpx  # here, not at the top: the emulator process imports this package too

        self._client = httpx.Client(
            base_url=control_url,
            headers={"Authorization": f"Bearer {token}"},
            verify=ssl.create_default_context(cafile=ca_file),
            timeout=30.0,
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        resp = self._client.request(method, path, json=body)
        if resp.status_code >= 400:
            raise EmulatorError(f"control {method} {path}: {resp.status_code} {resp.text}")
        return resp.json() if resp.content else None

    def health(self) -> dict[str, Any]:
        return self._call("GET", "health")

    def add_fault(self, kind: str, **fields: Any) -> dict[str, Any]:
        """kind: throttle | unavailable | outage | latency; fields: fraction, count, retry_after,
        latency_ms, mode ("reset"|"503"), target ("vault"|"entra"|"all"), operations."""
        return self._call("POST", "faults", {"kind": kind, **fields})["fault"]

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "faults")["faults"]

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def add_principal(
        self,
        client_id: str,
        roles: Sequence[str] | None = None,
        *,
        key_permissions: Sequence[str] | None = None,
        client_secret: str | None = None,
        federated_subjects: Sequence[str] | None = None,
        managed_identity: str | None = None,
    ) -> dict[str, Any]:
        """Create or change a principal: its RBAC roles (built-in names, aliases such as
        "crypto-user", or custom roles), its access policy `key_permissions`, and
        managed_identity "system"/"user" to serve it at /msi/token and the IMDS endpoint."""
        body: dict[str, Any] = {"client_id": client_id}
        if managed_identity is not None:
            body["managed_identity"] = managed_identity
        if roles is not None:
            body["roles"] = list(roles)
        if key_permissions is not None:
            body["key_permissions"] = list(key_permissions)
        if client_secret is not None:
            body["client_secret"] = client_secret
        if federated_subjects is not None:
            body["federated_subjects"] = list(federated_subjects)
        return self._call("POST", "principals", body)

    def set_roles(self, client_id: str, roles: Sequence[str]) -> dict[str, Any]:
        return self.add_principal(client_id, roles)

    def principals(self) -> list[dict[str, Any]]:
        return self._call("GET", "principals")["principals"]

    def remove_principal(self, client_id: str) -> None:
        self._call("DELETE", f"principals/{client_id}")

    def federated_token(
        self, client_id: str | None = None, *, subject: str | None = None, ttl_seconds: int = 3600
    ) -> str:
        body: dict[str, Any] = {"ttl_seconds": ttl_seconds}
        if client_id is not None:
            body["client_id"] = client_id
        if subject is not None:
            body["subject"] = subject
        return self._call("POST", "federated-token", body)["token"]

    def managed_identity_endpoint(self) -> dict[str, str]:
        return self._call("GET", "msi")

    def clock(self) -> dict[str, Any]:
        return self._call("GET", "clock")

    def set_clock_offset(self, seconds: float) -> dict[str, Any]:
        return self._call("POST", "clock", {"offset_seconds": seconds})

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        return self._call("POST", "clock", {"advance_seconds": seconds})

    def audit(self, since: int = 0) -> list[dict[str, Any]]:
        return self._call("GET", f"audit?since={since}")["events"]

    def set_sku(self, sku: str) -> None:
        self._call("POST", "sku", {"sku": sku})

    def set_limits(self, **limits: float | bool) -> dict[str, Any]:
        return self._call("POST", "limits", limits)

    def define_role(
        self, name: str, data_actions: Sequence[str], not_data_actions: Sequence[str] = ()
    ) -> dict[str, Any]:
        """A custom role, as `az role definition create` would make it."""
        body = {
            "roleName": name,
            "dataActions": list(data_actions),
            "notDataActions": list(not_data_actions),
        }
        return self._call("POST", "roles", body)

    def set_permission_model(self, model: str) -> None:
        """ "rbac" or "access-policy" (ARM: enableRbacAuthorization true / false)."""
        self._call("POST", "permission-model", {"model": model})

    def set_network_rules(self, default_action: str, ip_rules: Sequence[str] = ()) -> None:
        self._call(
            "POST", "network", {"default_action": default_action, "ip_rules": list(ip_rules)}
        )

    def set_soft_delete(self, **settings: float | bool) -> dict[str, Any]:
        """retention_days, purge_protection, delete_delay, recover_delay."""
        return self._call("POST", "soft-delete", settings)


@dataclass
class EmulatorProcess:
    process: subprocess.Popen[bytes]
    vault_url: str
    ca_file: str
    tenant_id: str
    authority_host: str
    control_url: str
    state_dir: Path
    control: ControlClient
    imds_url: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def write_federated_token(
        self, client_id: str, path: Path | None = None, ttl_seconds: int = 3600
    ) -> Path:
        """Write a Workload Identity token file (as the Kubernetes webhook would) for `client_id`."""
        target = path or self.state_dir / f"federated-token-{client_id}"
        token = self.control.federated_token(client_id, ttl_seconds=ttl_seconds)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        return target

    def sdk_env(self, client_id: str, *, workload_identity: bool = True) -> dict[str, str]:
        """Environment for a child process using the unmodified Azure SDK against this emulator."""
        env = {
            "AZURE_AUTHORITY_HOST": self.authority_host,
            "AZURE_TENANT_ID": self.tenant_id,
            "AZURE_CLIENT_ID": client_id,
            "REQUESTS_CA_BUNDLE": self.ca_file,
            "SSL_CERT_FILE": self.ca_file,
        }
        if workload_identity:
            env["AZURE_FEDERATED_TOKEN_FILE"] = str(self.write_federated_token(client_id))
        return env

    def managed_identity_env(self) -> dict[str, str]:
        """Environment making azure-identity's ManagedIdentityCredential use this emulator
        (the App Service flavour: IDENTITY_ENDPOINT + IDENTITY_HEADER)."""
        msi = self.control.managed_identity_endpoint()
        return {
            "IDENTITY_ENDPOINT": msi["endpoint"],
            "IDENTITY_HEADER": msi["header"],
            "REQUESTS_CA_BUNDLE": self.ca_file,
            "SSL_CERT_FILE": self.ca_file,
        }

    def imds_env(self) -> dict[str, str]:
        """Environment making azure-identity's ManagedIdentityCredential ask this emulator's
        Instance Metadata Service endpoint, as on a VM or an AKS node (the SDK reads
        AZURE_POD_IDENTITY_AUTHORITY_HOST instead of http://169.254.169.254)."""
        return {
            "AZURE_POD_IDENTITY_AUTHORITY_HOST": self.imds_url,
            "REQUESTS_CA_BUNDLE": self.ca_file,
            "SSL_CERT_FILE": self.ca_file,
        }

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by pid, then SIGKILL if it does not exit in time."""
        self.control.close()
        stop_process(self.process, timeout)

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _command() -> list[str]:
    script = Path(sys.executable).parent / "spirl-keyvault-emulator"
    if script.exists():
        return [str(script)]
    found = shutil.which("spirl-keyvault-emulator")
    if found:
        return [found]
    return [sys.executable, "-m", "controlplane.emulators.keyvault.cli"]


def start_emulator(
    state_dir: Path | str,
    *,
    sku: str = "premium",
    principals: Mapping[str, Sequence[str]] | None = None,
    listen: str = "127.0.0.1:0",
    control_token: str | None = None,
    limits: Mapping[str, float] | None = None,
    log_level: str = "INFO",
    startup_timeout: float = 30.0,
    tenant_dir: Path | str | None = None,
    permission_model: str = "rbac",
    access_policies: Mapping[str, Sequence[str]] | None = None,
    soft_delete: Mapping[str, float | bool] | None = None,
    retry_after: bool = True,
) -> EmulatorProcess:
    """Start `spirl-keyvault-emulator` and wait for its JSON line.

    limits: window_seconds, hsm_create, software_create, hsm_key, hsm_key_rsa3072,
    hsm_key_rsa4096, software_key, software_key_rsa3072, software_key_rsa4096, vault.
    retry_after: False answers 429s without Retry-After.
    permission_model: "rbac" (roles from `principals`) or "access-policy" (key permissions
    from `access_policies`).
    soft_delete: retention_days, purge_protection, delete_delay, recover_delay (seconds a
    delete / recovery takes; 0.5 by default).
    tenant_dir: share one tenant (tenant id, token signing key, CA) with other vaults started
    with the same folder (start them one after the other: the first one creates it).
    stderr goes to STATE_DIR/emulator.log.
    """
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    token = control_token or secrets.token_urlsafe(24)
    cmd = [
        *_command(),
        "--listen",
        listen,
        "--sku",
        sku,
        "--state-dir",
        str(state),
        "--log-level",
        log_level,
    ]
    if tenant_dir is not None:
        cmd += ["--tenant-dir", str(Path(tenant_dir).resolve())]
    for name, roles in (principals or {}).items():
        cmd += ["--principal", f"{name}={','.join(roles)}"]
    for name, permissions in (access_policies or {}).items():
        cmd += ["--access-policy", f"{name}={','.join(permissions)}"]
    cmd += ["--permission-model", permission_model]
    for key, value in (limits or {}).items():
        cmd += ["--limit-" + key.removesuffix("_seconds").replace("_", "-"), str(value)]
    if not retry_after:
        cmd.append("--no-retry-after")
    for key, value in (soft_delete or {}).items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            cmd += [flag] if value else []
        else:
            cmd += [flag, str(value)]
    # The token travels by environment, not argv, so it is not visible in `ps`.
    try:
        proc, info = start_announced(
            cmd,
            log_path=state / "emulator.log",
            env={"SPIRL_KV_EMULATOR_CONTROL_TOKEN": token},
            timeout=startup_timeout,
        )
    except ProcessStartError as exc:
        raise EmulatorError(str(exc)) from exc
    return EmulatorProcess(
        process=proc,
        vault_url=info["vault_url"],
        ca_file=info["ca_file"],
        tenant_id=info["tenant_id"],
        authority_host=info["authority_host"],
        control_url=info["control_url"],
        state_dir=state,
        control=ControlClient(info["control_url"], token, info["ca_file"]),
        imds_url=info["imds_url"],
    )
