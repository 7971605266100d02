"""Fixtures: one emulator process per test module (per xdist worker), stopped by pid."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient

from controlplane.emulators.keyvault import EmulatorProcess, start_emulator

from support.kv_sdk import ADMIN, ADMIN_SECRET, SdkFactory


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    state: Path = tmp_path_factory.mktemp("kv-emulator")
    # Generous create limits here: the limit tests run against their own emulator.
    emu = start_emulator(
        state,
        principals={ADMIN: ["crypto-officer", "crypto-user"]},
        limits={"hsm_create": 1000, "software_create": 1000},
    )
    try:
        emu.control.add_principal(ADMIN, client_secret=ADMIN_SECRET)
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def sdk(emulator: EmulatorProcess) -> SdkFactory:
    return SdkFactory(emulator)


@pytest.fixture(scope="module")
def admin_credential(sdk: SdkFactory) -> ClientSecretCredential:
    return sdk.secret_credential(ADMIN, ADMIN_SECRET)


@pytest.fixture(scope="module")
def admin_client(sdk: SdkFactory, admin_credential: ClientSecretCredential) -> KeyClient:
    return sdk.key_client(admin_credential)


@pytest.fixture(autouse=True)
def _clear_faults(emulator: EmulatorProcess) -> Iterator[None]:
    yield
    emulator.control.clear_faults()
