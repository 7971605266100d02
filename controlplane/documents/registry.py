"""The section types: names, schema versions and the scopes where each may be set."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SCOPES", "SectionType", "section_types"]

SCOPES = ("trust-domain", "trust-domain-deployment", "cluster")


@dataclass(frozen=True)
class SectionType:
    name: str
    versions: tuple[str, ...]
    allowed_scopes: tuple[str, ...]
    description: str


_TYPES = {
    "KeyLifecycle": SectionType(
        name="KeyLifecycle",
        versions=("v1",),
        allowed_scopes=SCOPES,
        description="Lifetimes of X.509 CA and JWT signing keys (x509CATTL, jwtKeyTTL; default 24h).",
    ),
    "KeyManager": SectionType(
        name="KeyManager",
        versions=("v1",),
        allowed_scopes=("trust-domain-deployment", "cluster"),
        description=(
            "Where signing keys live: the default key manager, azureKeyVault "
            "(Azure Key Vault HSM keys) or webhook (an external key service)."
        ),
    ),
}


def section_types() -> dict[str, SectionType]:
    """Every known section type by name (a fresh dict: callers may not change ours)."""
    return dict(_TYPES)
