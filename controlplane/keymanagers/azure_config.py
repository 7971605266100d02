"""Settings of the Azure Key Vault key manager, read from `spec.extensions.azureKeyVault`.

The document layer validates configs before they are stored; this parser still checks
what the key manager relies on (it may be handed a dict directly), and turns the
`credentials` block into an azure-identity credential.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from controlplane.documents import key_tag_problems
from controlplane.documents.patterns import Pattern, PatternError, compile_pattern
from controlplane.keymanagers.base import KeyManagerError, KeyType

__all__ = ["AzureKeyVaultConfig", "CredentialConfig", "SharedKeysConfig", "parse_config"]


@dataclass(frozen=True)
class SharedKeysConfig:
    key_name_template: str
    key_id_regex: Pattern  # RE2, as SPIRE's Go plugin: linear time on listed key names


@dataclass(frozen=True)
class CredentialConfig:
    kind: str  # "workloadIdentity" | "managedIdentity" | "clientSecret"
    client_id: str | None = None
    tenant_id: str | None = None
    client_secret_file: str | None = None


@dataclass(frozen=True)
class AzureKeyVaultConfig:
    vault_url: str
    key_tags: dict[str, str] = field(default_factory=dict)
    key_type: KeyType = KeyType.EC_P256
    shared_keys: SharedKeysConfig | None = None
    credentials: CredentialConfig = CredentialConfig("workloadIdentity")

    @property
    def vault_host(self) -> str:
        return urlsplit(self.vault_url).netloc


def _fail(where: str, reason: str) -> KeyManagerError:
    return KeyManagerError(f"azureKeyVault.{where} {reason}")


def _vault_url(raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise _fail("vaultURL", "is required (e.g. https://<vault-name>.vault.azure.net/)")
    parts = urlsplit(raw)
    if parts.scheme != "https" or not parts.hostname:
        raise _fail("vaultURL", f"must be an https URL with a host, got {raw!r}")
    return raw if raw.endswith("/") else raw + "/"


def _tags(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _fail("keyTags", "must be a mapping of tag name to string value")
    tags: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not name or not isinstance(value, str):
            raise _fail("keyTags", "names and values must be non-empty strings")
        tags[name] = value
    problems = key_tag_problems(tags)
    if problems:
        tag, reason = problems[0]
        raise _fail("keyTags" if tag is None else f"keyTags.{tag[:40]}", reason)
    return tags


def _shared(raw: Any) -> SharedKeysConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise _fail("sharedKeys", "must be a mapping")
    template = raw.get("keyNameTemplate")
    regex = raw.get("keyIdExtractionRegex")
    if not isinstance(template, str) or not template:
        raise _fail("sharedKeys.keyNameTemplate", "is required")
    if not isinstance(regex, str) or not regex:
        raise _fail("sharedKeys.keyIdExtractionRegex", "is required")
    try:
        compiled = compile_pattern(regex)
    except PatternError as exc:
        raise _fail("sharedKeys.keyIdExtractionRegex", str(exc)) from exc
    if compiled.groups != 1:
        raise _fail(
            "sharedKeys.keyIdExtractionRegex",
            f"must have exactly one capture group, it has {compiled.groups}",
        )
    return SharedKeysConfig(template, compiled)


def _credentials(raw: Any) -> CredentialConfig:
    if raw is None:
        return CredentialConfig("workloadIdentity")
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise _fail(
            "credentials",
            "must hold exactly one of workloadIdentity, managedIdentity, clientSecret",
        )
    ((kind, body),) = raw.items()
    body = body or {}
    if not isinstance(body, Mapping):
        raise _fail(f"credentials.{kind}", "must be a mapping")
    if kind == "workloadIdentity":
        return CredentialConfig(kind, body.get("clientID"), body.get("tenantID"))
    if kind == "managedIdentity":
        return CredentialConfig(kind, body.get("clientID"))
    if kind == "clientSecret":
        for required in ("tenantID", "clientID", "clientSecretFile"):
            if not body.get(required):
                raise _fail(f"credentials.clientSecret.{required}", "is required")
        return CredentialConfig(
            kind, body["clientID"], body["tenantID"], str(body["clientSecretFile"])
        )
    raise _fail("credentials", f"has unknown kind {kind!r}")


def parse_config(raw: Mapping[str, Any]) -> AzureKeyVaultConfig:
    if not isinstance(raw, Mapping):
        raise KeyManagerError("azureKeyVault settings must be a mapping")
    key_type_raw = raw.get("keyType") or KeyType.EC_P256.value
    try:
        key_type = KeyType(key_type_raw)
    except ValueError as exc:
        allowed = ", ".join(t.value for t in KeyType)
        raise _fail("keyType", f"must be one of {allowed}, got {key_type_raw!r}") from exc
    return AzureKeyVaultConfig(
        vault_url=_vault_url(raw.get("vaultURL")),
        key_tags=_tags(raw.get("keyTags")),
        key_type=key_type,
        shared_keys=_shared(raw.get("sharedKeys")),
        credentials=_credentials(raw.get("credentials")),
    )


def build_credential(
    cfg: CredentialConfig, connection_verify: str | bool | None, authority_host: str | None = None
) -> Any:
    """An azure-identity credential for `cfg`. Raises KeyManagerError naming what is missing.

    `authority_host` overrides AZURE_AUTHORITY_HOST (Entra ID endpoint; sovereign clouds,
    the emulator).

    Instance discovery is disabled: it only validates the authority host against
    Microsoft's list, and fails for sovereign or test authorities (AZURE_AUTHORITY_HOST).
    """
    from azure.identity import (
        ClientSecretCredential,
        ManagedIdentityCredential,
        WorkloadIdentityCredential,
    )

    kwargs: dict[str, Any] = {}
    if connection_verify is not None:
        kwargs["connection_verify"] = connection_verify
    entra_kwargs = dict(kwargs)
    if authority_host:
        entra_kwargs["authority"] = authority_host
    try:
        if cfg.kind == "clientSecret":
            assert cfg.client_secret_file and cfg.tenant_id and cfg.client_id
            try:
                secret = Path(cfg.client_secret_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise KeyManagerError(
                    f"cannot read the client secret file {cfg.client_secret_file}: {exc.strerror}"
                ) from exc
            if not secret:
                raise KeyManagerError(f"the client secret file {cfg.client_secret_file} is empty")
            return ClientSecretCredential(
                cfg.tenant_id,
                cfg.client_id,
                secret,
                disable_instance_discovery=True,
                **entra_kwargs,
            )
        if cfg.kind == "managedIdentity":
            return ManagedIdentityCredential(client_id=cfg.client_id, **kwargs)
        return WorkloadIdentityCredential(
            tenant_id=cfg.tenant_id or os.environ.get("AZURE_TENANT_ID"),
            client_id=cfg.client_id or os.environ.get("AZURE_CLIENT_ID"),
            token_file_path=os.environ.get("AZURE_FEDERATED_TOKEN_FILE"),
            disable_instance_discovery=True,
            **entra_kwargs,
        )
    except ValueError as exc:
        # azure-identity says which of tenant id, client id or token file is missing.
        raise KeyManagerError(f"Azure {cfg.kind} credential is not configured: {exc}") from exc
