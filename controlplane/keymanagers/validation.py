"""Argument checks shared by every key manager, so all reject bad input the same way."""

from __future__ import annotations

import re

from controlplane.keymanagers.base import KeyManagerError, KeyType

__all__ = ["MAX_KEY_ID_LENGTH", "coerce_key_type", "require_key_id"]

# Generous, but bounded: ids end up in file names, URLs and Key Vault tags (256 chars max).
MAX_KEY_ID_LENGTH = 256

# C0 controls and DEL; one regex search instead of a Python loop over the characters.
_CONTROL_CHARS = re.compile("[\x00-\x1f\x7f]")


def require_key_id(key_id: object) -> str:
    """Return `key_id` if it is a usable id, else raise KeyManagerError saying why."""
    if not isinstance(key_id, str) or not key_id:
        raise KeyManagerError("key id must be a non-empty string")
    if len(key_id) > MAX_KEY_ID_LENGTH:
        raise KeyManagerError(f"key id is longer than {MAX_KEY_ID_LENGTH} characters")
    if _CONTROL_CHARS.search(key_id):
        raise KeyManagerError("key id must not contain control characters")
    return key_id


def coerce_key_type(key_type: object) -> KeyType:
    """Accept a KeyType or its string value ("ec-p256", ...); raise KeyManagerError otherwise."""
    if isinstance(key_type, KeyType):
        return key_type
    if isinstance(key_type, str) and key_type:
        try:
            return KeyType(key_type)
        except ValueError:
            pass
    allowed = ", ".join(t.value for t in KeyType)
    raise KeyManagerError(f"key type {key_type!r} is not supported; allowed: {allowed}")
