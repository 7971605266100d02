"""The section types: names, schema versions and the scopes where each may be set."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SCOPES", "SectionType", "control_plane_sections", "section_types"]

SCOPES = ("trust-domain", "trust-domain-deployment", "cluster")


@dataclass(frozen=True)
class SectionType:
    name: str
    versions: tuple[str, ...]
    allowed_scopes: tuple[str, ...]
    description: str
    # False: read by the control plane only, never part of the config sent to servers.
    sent_to_servers: bool = True


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
    "Rollout": SectionType(
        name="Rollout",
        versions=("v1",),
        allowed_scopes=("trust-domain-deployment",),
        description=(
            "How a change reaches the deployment's servers: canary stages (by count, "
            "percentage or cluster), bake times, halt or roll back on a failure."
        ),
        sent_to_servers=False,
    ),
}


def control_plane_sections() -> frozenset[str]:
    """Sections the control plane reads itself and never sends to servers."""
    return frozenset(name for name, t in _TYPES.items() if not t.sent_to_servers)


def section_types() -> dict[str, SectionType]:
    """Every known section type by name (a fresh dict: callers may not change ours)."""
    return dict(_TYPES)
