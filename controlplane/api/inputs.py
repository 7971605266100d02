"""Strict reading of request input: JSON bodies, integers and booleans, each refused with a 400.

Pure functions (no request objects), so the same rules hold for every route and every test:

- a JSON body is UTF-8, one object, no key twice, no NaN/Infinity, integers of at most
  MAX_INT_DIGITS digits, and nested at most MAX_JSON_DEPTH deep. The depth is checked by our
  own scan before the json module runs, so its recursion (a RecursionError at ~1,000 levels,
  an interpreter detail) is never reached, and the refusal is ours whatever the Python version;
- an integer field is a JSON integer: "93", " 9", 94.0 and true are refused;
- every integer is bounded at the edge: versions, limits and ids fit the database's 32-bit
  `integer` columns, so a huge number is a 400, never a database error.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from controlplane.documents.schema_check import actual_type
from controlplane.domain import MAX_VERSION, BadRequest

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = [
    "BodyTooLarge",
    "AUDIT_LIMIT_MAX",
    "HISTORY_LIMIT_MAX",
    "JOIN_TOKEN_LIMIT_MAX",
    "MAX_INT",
    "MAX_JSON_DEPTH",
    "decode_json_object",
    "json_bool",
    "json_int",
    "query_bool",
    "query_int",
    "query_number",
    "read_capped",
]

MAX_INT = MAX_VERSION  # every integer the API takes is stored in an `integer` column
MAX_JSON_DEPTH = 32  # as for YAML documents; the API's own bodies nest 4 deep at most
MAX_INT_DIGITS = 19  # a 64-bit integer; a field's own bound is checked by json_int
HISTORY_LIMIT_MAX = 200  # versions per history page
AUDIT_LIMIT_MAX = 500  # audit events per page
JOIN_TOKEN_LIMIT_MAX = 500  # join tokens listed (the newest)
_DECIMAL = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?")
# Strings and brackets: what the depth scan needs to see (a string may hold any bracket).
# A string (its closing quote optional: an unterminated string is consumed once, to the end,
# instead of being rescanned from each of its quotes, which cost time quadratic in the body;
# json.loads refuses it afterwards) or a bracket.
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]')


def decode_json_object(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object; BadRequest saying what is wrong with it otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not UTF-8: invalid byte at offset {exc.start}") from None
    _check_depth(text)
    try:
        data = json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_integer,
            parse_constant=_constant,
        )
    except ValueError as exc:  # JSONDecodeError: the position is the useful part
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def _check_depth(text: str) -> None:
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return  # cannot nest deeper than it has brackets: the usual body costs two counts
    depth = 0
    for token in _JSON_TOKENS.finditer(text):
        mark = token.group()
        if mark in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise BadRequest(
                    f"request body nests JSON arrays/objects deeper than {MAX_JSON_DEPTH} "
                    f"levels (at character {token.start()})"
                )
        elif mark in "]}":
            depth = max(0, depth - 1)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadRequest(
                f"request body has the key {_show(key)} twice in one object; "
                "each key may appear once"
            )
        result[key] = value
    return result


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BadRequest(
            f"request body holds an integer of {len(text.lstrip('-'))} digits; "
            f"integers have at most {MAX_INT_DIGITS}"
        )
    return int(text)


def _constant(name: str) -> Any:
    raise BadRequest(f"request body holds {name}, which is not JSON; numbers must be finite")


def _show(text: str, limit: int = 40) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def _bounded(number: int, name: str, minimum: int, maximum: int) -> int:
    if not minimum <= number <= maximum:
        raise BadRequest(f"{name} must be an integer from {minimum} to {maximum}")
    return number


def json_int(
    value: Any, name: str, *, minimum: int = 0, maximum: int = MAX_INT, required: bool = False
) -> int | None:
    """An optional integer field of a JSON body: a JSON integer (not "93", 94.0 or true)."""
    if value is None:
        if required:
            raise BadRequest(f"{name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be a JSON integer, not {actual_type(value)}")
    return _bounded(value, name, minimum, maximum)


def query_int(
    text: str | None,
    name: str,
    *,
    minimum: int = 0,
    maximum: int = MAX_INT,
    required: bool = False,
) -> int | None:
    """An integer in a path or query string: decimal digits only (no sign, space or fraction)."""
    if text is None or text == "":
        if required:
            raise BadRequest(f"{name} is required")
        return None
    if not (text.isascii() and text.isdigit()):
        raise BadRequest(f"{name} must be a whole number written in digits, not {_show(text)}")
    if len(text) > len(str(maximum)):
        raise BadRequest(f"{name} must be an integer from {minimum} to {maximum}")
    return _bounded(int(text), name, minimum, maximum)


def query_number(text: str | None, name: str, *, default: float) -> float:
    """A non-negative decimal number of a query string (e.g. seconds)."""
    if text is None or text == "":
        return default
    if _DECIMAL.fullmatch(text) is None:
        raise BadRequest(
            f"{name} must be a non-negative number such as 30 or 2.5, not {_show(text)}"
        )
    return float(text)


def query_bool(text: str | None, name: str) -> bool:
    if text is None or text.lower() in ("", "false", "0"):
        return False
    if text.lower() in ("true", "1"):
        return True
    raise BadRequest(f"{name} must be true or false")


def json_bool(value: Any, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false, not {actual_type(value)}")
    return value


def json_text(value: Any, name: str, *, max_length: int) -> str | None:
    """An optional one-line string of at most `max_length` characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string, not {actual_type(value)}")
    if len(value) > max_length or any(ord(ch) < 0x20 for ch in value):
        raise BadRequest(f"{name} must be one line of at most {max_length} characters")
    return value


class BodyTooLarge(Exception):
    """A request body over the caller's limit; `declared`: its Content-Length when that said so
    (nothing was read), else None (refused while reading)."""

    def __init__(self, limit: int, declared: int | None) -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit = limit
        self.declared = declared


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, refused (BodyTooLarge) as soon as it is known to exceed `limit`: from
    Content-Length before reading, else while streaming, so a huge body is never held whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit, int(declared))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(limit, None)
    return bytes(body)
