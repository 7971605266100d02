"""Fixtures for the key manager tests.

`contract.py` lives beside this file and is imported as a top-level module
(``from contract import KeyManagerContract``); the path insert below makes that
work whatever pytest import mode runs the suite.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.keyvault.keys import KeyClient

from controlplane.emulators.keyservice import KeyServiceProcess, start_keyservice
from controlplane.emulators.keyvault import EmulatorProcess, start_emulator
from controlplane.keymanagers.azure_key_vault import AzureKeyVaultKeyManager
from controlplane.keymanagers.default import DefaultKeyManager

from support.kv_sdk import SdkFactory

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from azure_kv import (  # noqa: E402
    ADMIN,
    ADMIN_SECRET,
    BOTH_ROLES,
    SERVER_APP,
    SERVER_SECRET,
    TRUST_DOMAIN,
    config,
    secret_file,
)


@pytest.fixture
def kek() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def default_key_manager(tmp_path: Path, kek: bytes) -> Iterator[DefaultKeyManager]:
    manager = DefaultKeyManager(tmp_path / "keys", kek)
    yield manager
    manager.close()


@pytest.fixture(scope="module")
def keyservice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyServiceProcess]:
    """One real key service process per test module, stopped by pid at the end.

    Tests get isolated key sets through `keyservice.namespace_url(...)`.
    """
    with start_keyservice(tmp_path_factory.mktemp("keyservice")) as service:
        yield service


@pytest.fixture
def webhook_url(keyservice: KeyServiceProcess) -> str:
    """A fresh, empty namespace of the module's key service."""
    return keyservice.namespace_url(f"t-{secrets.token_hex(6)}")


# -- Azure Key Vault: one emulator process per test module ------------------------------------


# Raised create limits: the contract suite creates many keys fast; limits get their own tests.
# Deletes and recoveries take a moment, as in Azure. reset_kv puts both back after each test.
KV_LIMITS = {"window_seconds": 10, "hsm_create": 10_000, "software_create": 10_000}
KV_SOFT_DELETE = {"delete_delay": 0.3, "recover_delay": 0.3}


@pytest.fixture(scope="module")
def kv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    emu = start_emulator(
        tmp_path_factory.mktemp("akv"),
        principals={ADMIN: ["administrator"], SERVER_APP: BOTH_ROLES},
        limits=KV_LIMITS,
        soft_delete=KV_SOFT_DELETE,
    )
    try:
        # The admin may act on the vault in both permission models (tests switch them).
        emu.control.add_principal(ADMIN, key_permissions=["all"], client_secret=ADMIN_SECRET)
        emu.control.add_principal(SERVER_APP, client_secret=SERVER_SECRET)
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def admin(kv: EmulatorProcess) -> KeyClient:
    sdk = SdkFactory(kv)
    return sdk.key_client(sdk.secret_credential(ADMIN, ADMIN_SECRET))


@pytest.fixture
def reset_kv(kv: EmulatorProcess) -> Iterator[None]:
    """Put back what a test may change on the module's emulator."""
    yield
    kv.control.clear_faults()
    kv.control.set_clock_offset(0)
    kv.control.set_permission_model("rbac")
    kv.control.set_network_rules("Allow")
    kv.control.set_soft_delete(purge_protection=False, retention_days=90, **KV_SOFT_DELETE)
    kv.control.set_limits(**KV_LIMITS)


@pytest.fixture
def make_manager(
    kv: EmulatorProcess, tmp_path: Path
) -> Iterator[Callable[..., AzureKeyVaultKeyManager]]:
    made: list[AzureKeyVaultKeyManager] = []

    def make(
        *,
        server_id: str | None = None,
        trust_domain: str = TRUST_DOMAIN,
        client_id: str = SERVER_APP,
        secret: str = SERVER_SECRET,
        **kwargs: Any,
    ) -> AzureKeyVaultKeyManager:
        extra = kwargs.pop("config", {})
        manager = AzureKeyVaultKeyManager(
            config(kv, secret_file(tmp_path, secret), client_id, **extra),
            trust_domain=trust_domain,
            server_id=server_id or f"server-{secrets.token_hex(4)}",
            connection_verify=kv.ca_file,
            authority_host=kv.authority_host,
            **kwargs,
        )
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.close()
