"""Size and shape limits for uploaded YAML: the defence against hostile input."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "Limits"]


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 1_048_576  # whole request text
    max_document_bytes: int = 262_144
    max_documents: int = 20
    max_depth: int = 32  # nesting of mappings/sequences
    max_nodes: int = 10_000  # counted after alias expansion (YAML bombs)
    max_aliases: int = 100


DEFAULT_LIMITS = Limits()
