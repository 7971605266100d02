"""build_key_manager / key_manager_digest: which manager a KeyManager spec gives."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from controlplane.keymanagers import (
    DEFAULT_KEYS_SUBDIR,
    KeyManagerContext,
    KeyManagerError,
    KeyType,
    build_key_manager,
    key_manager_digest,
    key_manager_type,
)
from controlplane.keymanagers.default import DefaultKeyManager
from controlplane.keymanagers.webhook import WebhookKeyManager

from contract import assert_signs_and_verifies


@pytest.fixture
def context(tmp_path: Path) -> KeyManagerContext:
    return KeyManagerContext(
        data_dir=tmp_path, kek=secrets.token_bytes(32), trust_domain="example.org", server_id="s-1"
    )


@pytest.mark.parametrize("spec", [None, {}, {"extensions": {}}, {"extensions": None}])
def test_default_for_empty_specs(spec: dict | None, context: KeyManagerContext) -> None:
    manager = build_key_manager(spec, context)
    assert isinstance(manager, DefaultKeyManager)
    assert manager.type_name == "default" == key_manager_type(spec)
    key = manager.generate_key("k", KeyType.EC_P256)
    assert_signs_and_verifies(manager, key)
    assert manager.data_dir == context.data_dir / DEFAULT_KEYS_SUBDIR
    assert list((context.data_dir / DEFAULT_KEYS_SUBDIR).iterdir())


def test_kek_is_not_in_repr(context: KeyManagerContext) -> None:
    assert context.kek.hex() not in repr(context)
    assert repr(context.kek) not in repr(context)


def test_webhook(webhook_url: str, context: KeyManagerContext) -> None:
    spec = {"extensions": {"webhook": {"webhookURL": webhook_url, "timeout": "5s"}}}
    manager = build_key_manager(spec, context)
    assert isinstance(manager, WebhookKeyManager)
    assert key_manager_type(spec) == "webhook"
    manager.check()
    assert_signs_and_verifies(manager, manager.generate_key("w", KeyType.EC_P384))
    manager.close()


def test_whole_document_accepted(webhook_url: str, context: KeyManagerContext) -> None:
    document = {
        "section": "KeyManager",
        "schema": "v1",
        "spec": {"extensions": {"webhook": {"webhookURL": webhook_url}}},
    }
    assert isinstance(build_key_manager(document, context), WebhookKeyManager)
    assert key_manager_digest(document) == key_manager_digest(document["spec"])


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"extensions": {"webhook": {}, "azureKeyVault": {}}}, "at most one"),
        ({"extensions": {"hsm": {}}}, "unknown key manager extension 'hsm'"),
        ({"extensions": {"default": {}}}, "unknown key manager extension"),
        ({"extensions": ["webhook"]}, "must be a mapping"),
        ({"extensions": {"webhook": "http://x"}}, "must be a mapping"),
        ({"extensions": {"webhook": {"webhookURL": "ftp://x"}}}, "http or https"),
    ],
)
def test_bad_specs(spec: dict, reason: str, context: KeyManagerContext) -> None:
    with pytest.raises(KeyManagerError, match=reason):
        build_key_manager(spec, context)


def test_digest_is_canonical() -> None:
    a = {"extensions": {"webhook": {"webhookURL": "https://k", "timeout": "5s"}}}
    b = {"extensions": {"webhook": {"timeout": "5s", "webhookURL": "https://k"}}}
    c = {"extensions": {"webhook": {"webhookURL": "https://k", "timeout": "6s"}}}
    assert key_manager_digest(a) == key_manager_digest(b)
    assert key_manager_digest(a) != key_manager_digest(c)
    assert key_manager_digest(a).startswith("sha256:") and len(key_manager_digest(a)) == 71
    assert (
        key_manager_digest(None) == key_manager_digest({}) == key_manager_digest({"extensions": {}})
    )
    assert key_manager_digest(None) != key_manager_digest(a)
