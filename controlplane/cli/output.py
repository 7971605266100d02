"""Output for humans (aligned tables) and for scripts (-o json / -o yaml)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from controlplane.fleet import printable
from controlplane.rollout_text import duration

FORMATS = ("table", "json", "yaml")


def emit(
    data: Any,
    fmt: str,
    *,
    columns: Sequence[tuple[str, str]] | None = None,
    out: TextIO | None = None,
) -> None:
    """Print `data` as JSON, YAML, or (default) a table of `columns` [(header, key)]."""
    out = out or sys.stdout
    if fmt == "json":
        out.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
        return
    if fmt == "yaml":
        import yaml

        out.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
        return
    rows = data if isinstance(data, list) else [data]
    if columns is None:
        columns = [(k.upper(), k) for k in (rows[0].keys() if rows else [])]
    out.write(
        table([[cell(dig(r, key)) for _, key in columns] for r in rows], [h for h, _ in columns])
    )


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines) + "\n"


def dig(row: Any, key: str) -> Any:
    """`row[a][b]` for the key `a.b`; None where a part is missing."""
    value = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def cell(value: Any) -> str:
    """A value as one table cell (`-` for none), never a terminal escape or a line break:
    values come from servers and other users."""
    if value is None:
        return "-"
    if isinstance(value, list):
        return printable(",".join(str(v) for v in value)) or "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)  # escapes control characters itself
    return printable(str(value))


def one_line(text: str | None, limit: int = 60) -> str | None:
    """A long error cut to one short line for a table cell; the full text stays in -o json."""
    if not text:
        return text
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def ago(seconds: float | None) -> str:
    """`45s ago`, `4m12s ago`, `3h5m ago`, `2d4h ago`."""
    return "-" if seconds is None else duration(seconds) + " ago"
