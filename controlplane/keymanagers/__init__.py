"""Key managers: the KeyManager contract, its implementations, and the factory that picks one.

``build_key_manager(spec, context)`` turns the ``spec`` of a KeyManager section into a
ready (not yet checked) key manager:

- ``None``, ``{}`` or empty ``extensions``  -> :class:`DefaultKeyManager` in
  ``context.data_dir / "default-keys"`` wrapped with ``context.kek``;
- ``extensions.webhook``                   -> :class:`WebhookKeyManager`;
- ``extensions.azureKeyVault``             -> ``AzureKeyVaultKeyManager`` (imported lazily:
  the Azure SDK is heavy and only servers that use it should pay for it).

Callers then run ``check()`` before they swap the new manager in (DESIGN.md §4).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controlplane.keymanagers.base import (
    HashAlgorithm,
    KeyManager,
    KeyManagerError,
    KeyNotFoundError,
    KeyType,
    PublicKey,
    SigningAlgorithm,
    TransientKeyManagerError,
)

__all__ = [
    "DEFAULT_KEYS_SUBDIR",
    "KEY_MANAGER_TYPES",
    "HashAlgorithm",
    "KeyManager",
    "KeyManagerContext",
    "KeyManagerError",
    "KeyNotFoundError",
    "KeyType",
    "PublicKey",
    "SigningAlgorithm",
    "TransientKeyManagerError",
    "build_key_manager",
    "key_manager_digest",
    "key_manager_type",
]

KEY_MANAGER_TYPES = ("default", "azureKeyVault", "webhook")
DEFAULT_KEYS_SUBDIR = "default-keys"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class KeyManagerContext:
    """What a key manager needs from the server that runs it.

    `data_dir` is the server's folder for key manager state (the default key manager
    keeps its wrapped keys in ``data_dir / "default-keys"``); `kek` the 32-byte
    key-encrypting key (see ``controlplane.keymanagers.default.load_or_create_kek``);
    `trust_domain` as written (``example.org``); `server_id` the stable id used to tag
    keys in shared stores; `clock` returns an aware UTC datetime (tests inject their own).
    """

    data_dir: Path
    kek: bytes = field(repr=False)
    trust_domain: str
    server_id: str
    clock: Callable[[], datetime] = _utc_now


def _spec_of(key_manager_spec: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """Accept the section's `spec`, or (leniently) the whole KeyManager document."""
    if key_manager_spec is None:
        return {}
    if not isinstance(key_manager_spec, Mapping):
        raise KeyManagerError("KeyManager spec must be a mapping")
    if key_manager_spec.get("section") == "KeyManager" and "spec" in key_manager_spec:
        inner = key_manager_spec.get("spec") or {}
        if not isinstance(inner, Mapping):
            raise KeyManagerError("KeyManager spec must be a mapping")
        return inner
    return key_manager_spec


def _extension(key_manager_spec: Mapping[str, Any] | None) -> tuple[str, Mapping[str, Any]]:
    spec = _spec_of(key_manager_spec)
    extensions = spec.get("extensions") or {}
    if not isinstance(extensions, Mapping):
        raise KeyManagerError("KeyManager spec.extensions must be a mapping")
    if not extensions:
        return "default", {}
    if len(extensions) > 1:
        raise KeyManagerError(
            f"KeyManager spec.extensions holds {len(extensions)} key managers "
            f"({', '.join(sorted(extensions))}); at most one is allowed"
        )
    ((name, config),) = extensions.items()
    if name not in KEY_MANAGER_TYPES or name == "default":
        raise KeyManagerError(
            f"unknown key manager extension {name!r}; allowed: azureKeyVault, webhook"
        )
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise KeyManagerError(f"KeyManager spec.extensions.{name} must be a mapping")
    return name, config


def key_manager_type(key_manager_spec: Mapping[str, Any] | None) -> str:
    """ "default", "azureKeyVault" or "webhook" for a KeyManager spec."""
    return _extension(key_manager_spec)[0]


def build_key_manager(
    key_manager_spec: Mapping[str, Any] | None, context: KeyManagerContext
) -> KeyManager:
    """A new key manager for `key_manager_spec`; raises KeyManagerError for a bad spec."""
    name, config = _extension(key_manager_spec)
    if name == "default":
        from controlplane.keymanagers.default import DefaultKeyManager

        return DefaultKeyManager(Path(context.data_dir) / DEFAULT_KEYS_SUBDIR, context.kek)
    if name == "webhook":
        from controlplane.keymanagers.webhook import WebhookKeyManager

        return WebhookKeyManager(config)
    from controlplane.keymanagers.azure_key_vault import AzureKeyVaultKeyManager

    manager: KeyManager = AzureKeyVaultKeyManager(
        config,
        trust_domain=context.trust_domain,
        server_id=context.server_id,
        clock=context.clock,
    )
    return manager


def key_manager_digest(key_manager_spec: Mapping[str, Any] | None) -> str:
    """ "sha256:<hex>" of the canonical JSON of a KeyManager spec, for status reports.

    Canonical: keys sorted, no whitespace, UTF-8. Every way of saying "default" (None,
    {}, empty extensions) gives the same digest, and the whole document digests like
    its spec, so equal configurations always compare equal.
    """
    spec = dict(_spec_of(key_manager_spec))
    if not spec.get("extensions"):
        spec.pop("extensions", None)
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
