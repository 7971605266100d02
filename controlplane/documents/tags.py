"""Key tag names and values: plain text, and no name that is, or looks like, a reserved prefix.

Key Vault keys carry the server's own tags (spire-server-td, spire-server-id, spire-key-id) and
Azure's (azure:...); defakto- is the vendor's. A user tag must not collide with them, nor
pretend to: the prefix check runs on a skeleton of the name (NFKC, case folded, combining
marks, invisible format characters and spaces removed, Unicode look-alikes mapped to the letter
they imitate), so Cyrillic 'аzure:', fullwidth 'azure：', 'spi\u200bre-', 'SPİRE-' and
' spire-' are all refused, and named as look-alikes.
"""

from __future__ import annotations

import re
import unicodedata

from .lookalikes import LOOKALIKES

__all__ = ["RESERVED_TAG_PREFIXES", "control_character", "reserved_prefix_problem", "skeleton"]

RESERVED_TAG_PREFIXES = ("azure:", "defakto-", "spire-")
# Category Cc (C0, DEL, C1) and Unicode's line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_DROPPED = {"Mn", "Me", "Cf", "Zs", "Zl", "Zp", "Cc"}  # marks, invisible, spaces


def control_character(text: str) -> str | None:
    """'U+000A at offset 3' for the first control character or line break of text, else None."""
    found = _CONTROL.search(text)
    return None if found is None else f"U+{ord(found.group()):04X} at offset {found.start()}"


def skeleton(text: str) -> str:
    """How `text` reads: NFKC, case folded, without marks, invisible characters or spaces,
    look-alike characters replaced by the ASCII letter they imitate."""
    folded = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text).casefold())
    kept = (c for c in folded if unicodedata.category(c) not in _DROPPED)
    return "".join(LOOKALIKES.get(c, c) for c in kept)


def reserved_prefix_problem(name: str) -> str | None:
    """Why tag name `name` is refused for its prefix, or None."""
    reserved = "names starting with azure:, defakto- or spire- (any case) are reserved"
    lowered = name.lower()
    for prefix in RESERVED_TAG_PREFIXES:
        if lowered.startswith(prefix):
            return f"tag name starts with the reserved prefix {prefix!r}; {reserved}"
    read_as = skeleton(name)
    for prefix in RESERVED_TAG_PREFIXES:
        if read_as.startswith(prefix):
            return (
                f"tag name looks like the reserved prefix {prefix!r}: it reads {prefix!r} once "
                "look-alike letters, invisible characters, spaces, accents, width and case are "
                f"normalised; {reserved}"
            )
    return None
