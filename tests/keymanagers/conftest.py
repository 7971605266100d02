"""Fixtures for the key manager tests.

`contract.py` lives beside this file and is imported as a top-level module
(``from contract import KeyManagerContract``); the path insert below makes that
work whatever pytest import mode runs the suite.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.emulators.keyservice import KeyServiceProcess, start_keyservice
from controlplane.keymanagers.default import DefaultKeyManager

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


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
