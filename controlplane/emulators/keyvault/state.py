"""The emulator's shared state: settings, the tenant, keys, principals, limits, faults, audit.

The route modules (vault.py, entra.py, control.py) work on an `EmulatorState`; app.py builds one
with the routes on top and dispatches requests. Imports flow app -> routes -> state, never back.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .audit import AuditLog
from .identity import PERMISSION_MODELS, RBAC, PrincipalStore
from .limits import FaultInjector, Limits, RateLimiter
from .network import NetworkRules
from .store import Clock, KeyStore, SoftDeleteSettings
from .tokens import TokenSigner

__all__ = ["FEDERATION_AUDIENCE", "VAULT_RESOURCE", "EmulatorSettings", "EmulatorState"]

log = logging.getLogger(__name__)

VAULT_RESOURCE = "https://vault.azure.net"
FEDERATION_AUDIENCE = "api://AzureADTokenExchange"


@dataclass
class EmulatorSettings:
    state_dir: Path
    sku: str = "premium"
    control_token: str = ""
    limits: Limits = Limits()
    permission_model: str = RBAC
    soft_delete: SoftDeleteSettings = field(default_factory=SoftDeleteSettings)
    vault_name: str = "emulator"
    # Where the tenant lives (tenant id, token signing key, TLS CA); default: state_dir.
    # Several vault processes given the same tenant dir act as vaults of one Azure tenant:
    # a token from any of their Entra endpoints is good at all of them, one CA file trusts
    # all of them. Keys, principals (role assignments) and faults stay per vault.
    tenant_dir: Path | None = None


def _tenant_id(state_dir: Path) -> str:
    path = state_dir / "tenant-id"
    if path.exists():
        return path.read_text().strip()
    tenant = str(uuid.uuid4())
    path.write_text(tenant + "\n")
    return tenant


def _msi_header(state_dir: Path) -> str:
    """The secret an App Service managed identity client sends as X-IDENTITY-HEADER."""
    path = state_dir / "msi-header"
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


class EmulatorState:
    """Everything the routes share; one per vault process."""

    def __init__(self, settings: EmulatorSettings) -> None:
        state_dir = settings.state_dir
        tenant_dir = settings.tenant_dir or state_dir
        self.settings = settings
        self._sku = settings.sku
        self._lock = threading.Lock()
        self.tenant_id = _tenant_id(tenant_dir)
        self.msi_header = _msi_header(state_dir)
        self.clock = Clock()
        self.store = KeyStore(state_dir / "keys.json", self.clock, settings.soft_delete)
        self.vault_name = settings.vault_name
        self.location = "emulated"
        self.subscription_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"spirl:{self.tenant_id}"))
        self._permission_model = RBAC
        self.permission_model = settings.permission_model
        self.network = NetworkRules()
        self.principals = PrincipalStore(state_dir / "principals.json")
        self.signer = TokenSigner(tenant_dir / "token-signing-key.pem")
        self.limiter = RateLimiter(settings.limits)
        self.faults = FaultInjector()
        self.audit = AuditLog(state_dir / "audit.jsonl")
        self.base_url = ""  # set once the port is known: "https://127.0.0.1:PORT/"
        self.started = time.time()

    @property
    def sku(self) -> str:
        with self._lock:
            return self._sku

    @sku.setter
    def sku(self, value: str) -> None:
        if value not in ("premium", "standard"):
            raise ValueError("sku must be premium or standard")
        with self._lock:
            self._sku = value

    @property
    def permission_model(self) -> str:
        with self._lock:
            return self._permission_model

    @permission_model.setter
    def permission_model(self, value: str) -> None:
        # A vault authorizes data-plane calls with Azure RBAC or with its access policies,
        # never both (ARM property enableRbacAuthorization).
        if value not in PERMISSION_MODELS:
            raise ValueError(f"permission model must be one of {', '.join(PERMISSION_MODELS)}")
        with self._lock:
            self._permission_model = value

    def set_limits(self, limits: Limits) -> None:
        self.limiter = RateLimiter(limits)

    @property
    def federation_issuer(self) -> str:
        return f"{self.base_url}federation"
