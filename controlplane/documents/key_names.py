"""Azure Key Vault key names: only [0-9a-zA-Z-], 1 to 127 characters."""

from __future__ import annotations

import re

__all__ = ["KEY_NAME_MAX", "is_valid_key_vault_key_name", "sanitize_key_vault_name"]

KEY_NAME_MAX = 127
_VALID = re.compile(r"[0-9a-zA-Z-]{1,127}")
_INVALID_CHAR = re.compile(r"[^0-9a-zA-Z-]")


def is_valid_key_vault_key_name(name: str) -> bool:
    # fullmatch, not ^...$: "$" would accept a trailing newline.
    return isinstance(name, str) and _VALID.fullmatch(name) is not None


def sanitize_key_vault_name(text: str) -> str:
    """Map every character Key Vault refuses to '-' and cut to 127 characters.

    The result is valid unless `text` is empty (an empty name stays empty).
    """
    return _INVALID_CHAR.sub("-", text)[:KEY_NAME_MAX]
