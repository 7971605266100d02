"""JSON Pointers (RFC 6901) for issue locations."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["escape", "from_path", "join"]


def escape(token: str | int) -> str:
    # Order matters: '~' first, else the '~1' produced for '/' would be escaped again.
    return str(token).replace("~", "~0").replace("/", "~1")


def join(base: str, *tokens: str | int) -> str:
    """join("/spec/keyTags", "a/b") -> "/spec/keyTags/a~1b" (base is already a pointer)."""
    return base + "".join("/" + escape(token) for token in tokens)


def from_path(tokens: Iterable[str | int]) -> str:
    """Pointer for a path of keys and indices from the document root ("" is the root)."""
    return join("", *tokens)
