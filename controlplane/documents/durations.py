"""Durations as written in documents: "90s", "5m", "24h", "1h30m", "7d"."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_PART = re.compile(r"(\d{1,9})([dhms])")
_MAX_TEXT = 40


def parse_duration(text: str) -> timedelta:
    """Parse a positive duration: integer parts with units d, h, m, s, largest unit first.

    Raises ValueError with a reason that says what is allowed.
    """
    if not isinstance(text, str):
        raise ValueError(
            f"must be a duration string such as '90s' or '1h30m', got {type(text).__name__}"
        )
    allowed = "a duration such as '90s', '5m', '24h', '1h30m' or '7d' (units d, h, m, s)"
    if not text or len(text) > _MAX_TEXT:
        raise ValueError(f"must be {allowed}")
    total = 0
    pos = 0
    last_rank = -1
    ranks = list(_UNITS)
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None:
            raise ValueError(f"must be {allowed}")
        rank = ranks.index(match.group(2))
        if rank <= last_rank:
            raise ValueError(f"must be {allowed}, each unit once, largest first")
        last_rank = rank
        total += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if total <= 0:
        raise ValueError("must be longer than zero")
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """Shortest text parse_duration reads back to `value` (whole seconds), e.g. "1h30m"."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        raise ValueError("duration must be positive")
    out = ""
    for unit, size in _UNITS.items():
        amount, seconds = divmod(seconds, size)
        if amount:
            out += f"{amount}{unit}"
    return out
