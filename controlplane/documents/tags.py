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
from collections.abc import Mapping

from .lookalikes import LOOKALIKES

__all__ = [
    "KEY_TAGS_MAX",
    "KEY_TAG_LENGTH_MAX",
    "RESERVED_TAG_PREFIXES",
    "SERVER_KEY_TAGS",
    "control_character",
    "key_tag_problems",
    "reserved_prefix_problem",
    "skeleton",
]

RESERVED_TAG_PREFIXES = ("azure:", "defakto-", "spire-")
# Key tags (learn.microsoft.com "Azure Key Vault keys details", Key tags): up to 15 per key,
# names and values up to 256 characters. The server sets 3 of its own (spire-server-td,
# spire-server-id, spire-key-id), so users get 12.
KEY_TAGS_MAX = 15
KEY_TAG_LENGTH_MAX = 256
SERVER_KEY_TAGS = 3
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


def key_tag_problems(tags: Mapping[str, object]) -> list[tuple[str | None, str]]:
    """Every way user `tags` break the rules: control characters, reserved prefixes (look-alikes
    included) and Key Vault's tag limits once the server adds its own: (tag name, or None for the
    whole set; reason)."""
    problems: list[tuple[str | None, str]] = []
    allowed = KEY_TAGS_MAX - SERVER_KEY_TAGS
    if len(tags) > allowed:
        problems.append(
            (
                None,
                f"at most {allowed} tags (Key Vault allows {KEY_TAGS_MAX} per key and the "
                f"server sets {SERVER_KEY_TAGS} of its own); got {len(tags)}",
            )
        )
    for name, value in tags.items():
        control = control_character(name)
        if control:
            problems.append((name, f"tag name holds a control character ({control})"))
        reason = reserved_prefix_problem(name)
        if reason:
            problems.append((name, reason))
        control = control_character(value) if isinstance(value, str) else None
        if control:
            problems.append(
                (
                    name,
                    f"tag value holds a control character ({control}); values are one line of text",
                )
            )
        if len(name) > KEY_TAG_LENGTH_MAX:
            problems.append(
                (name, f"tag name is {len(name)} characters; Key Vault allows {KEY_TAG_LENGTH_MAX}")
            )
        if isinstance(value, str) and len(value) > KEY_TAG_LENGTH_MAX:
            problems.append(
                (
                    name,
                    f"tag value is {len(value)} characters; Key Vault allows {KEY_TAG_LENGTH_MAX}",
                )
            )
    return problems
