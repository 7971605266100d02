"""Side-by-side rows for one section's YAML in two versions (the console's diff view).

Pure: the documents layer says which sections changed (`controlplane.documents.diff_sections`);
this lines up their canonical YAML line by line (difflib) and folds long unchanged stretches,
so a one-line change in a large document stays a short page.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

__all__ = ["CONTEXT_LINES", "Row", "side_by_side"]

CONTEXT_LINES = 3
RowKind = Literal["same", "changed", "removed", "added", "folded"]


@dataclass(frozen=True)
class Row:
    kind: RowKind
    old_no: int | None = None
    old: str | None = None
    new_no: int | None = None
    new: str | None = None
    folded: int = 0  # for kind "folded": how many unchanged lines it stands for


def side_by_side(old: str | None, new: str | None, context: int = CONTEXT_LINES) -> list[Row]:
    """Rows pairing the lines of `old` and `new` (None: the section is absent on that side)."""
    a, b = (old or "").splitlines(), (new or "").splitlines()
    rows: list[Row] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            rows += [
                Row("same", i + 1, a[i], j + 1, b[j])
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
            ]
            continue
        left, right = list(range(i1, i2)), list(range(j1, j2))
        for n in range(max(len(left), len(right))):
            i = left[n] if n < len(left) else None
            j = right[n] if n < len(right) else None
            kind: RowKind = (
                "changed"
                if i is not None and j is not None
                else "removed"
                if j is None
                else "added"
            )
            rows.append(
                Row(
                    kind,
                    None if i is None else i + 1,
                    None if i is None else a[i],
                    None if j is None else j + 1,
                    None if j is None else b[j],
                )
            )
    return _fold(rows, context)


def _fold(rows: list[Row], context: int) -> list[Row]:
    """Replace runs of unchanged rows longer than 2*context+1 by one "folded" row."""
    out: list[Row] = []
    run: list[Row] = []

    def flush(at_start: bool, at_end: bool) -> None:
        keep_head = 0 if at_start else context
        keep_tail = 0 if at_end else context
        if len(run) > keep_head + keep_tail + 1:
            out.extend(run[:keep_head])
            out.append(Row("folded", folded=len(run) - keep_head - keep_tail))
            out.extend(run[len(run) - keep_tail :])
        else:
            out.extend(run)
        run.clear()

    for row in rows:
        if row.kind == "same":
            run.append(row)
            continue
        flush(at_start=not out, at_end=False)
        out.append(row)
    if run:
        flush(at_start=not out, at_end=True)
    return out
