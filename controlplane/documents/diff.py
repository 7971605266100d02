"""Per-section differences between two config versions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["Change", "SectionDiff", "diff_sections"]

Change = Literal["added", "removed", "changed", "unchanged"]


class DiffableSection(Protocol):
    """What a diff reads: parsed `Section`s and stored sections both fit."""

    @property
    def digest(self) -> str: ...

    @property
    def canonical_yaml(self) -> str: ...


@dataclass(frozen=True)
class SectionDiff:
    section: str
    change: Change
    old_yaml: str | None
    new_yaml: str | None


def diff_sections(
    old: Mapping[str, DiffableSection], new: Mapping[str, DiffableSection]
) -> list[SectionDiff]:
    """Compare two versions section by section (by digest), sorted by section name."""
    out: list[SectionDiff] = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        change: Change
        if before is None:
            change = "added"
        elif after is None:
            change = "removed"
        elif before.digest == after.digest:
            change = "unchanged"
        else:
            change = "changed"
        out.append(
            SectionDiff(
                section=name,
                change=change,
                old_yaml=before.canonical_yaml if before is not None else None,
                new_yaml=after.canonical_yaml if after is not None else None,
            )
        )
    return out
