"""Strict request input (controlplane/api/inputs.py): the rules every route shares."""

from __future__ import annotations

import pytest

from controlplane.api.inputs import (
    MAX_INT,
    MAX_JSON_DEPTH,
    decode_json_object,
    json_bool,
    json_int,
    query_int,
    query_number,
)
from controlplane.domain import BadRequest


def refused(fn, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(BadRequest) as error:
        fn(*args, **kwargs)
    return str(error.value)


def test_json_objects_decode() -> None:
    assert decode_json_object(b'{"a": [1, {"b": "[[[["}], "c": 2.5}') == {
        "a": [1, {"b": "[[[["}],
        "c": 2.5,
    }
    nested = b'{"a":' * (MAX_JSON_DEPTH - 1) + b"[]" + b"}" * (MAX_JSON_DEPTH - 1)
    assert decode_json_object(nested)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"a": 1, "a": 2}', "has the key 'a' twice"),
        (b'{"x": {"a": 1, "a": 1}}', "has the key 'a' twice"),
        (b"[" * 100_000 + b"]" * 100_000, f"deeper than {MAX_JSON_DEPTH} levels"),
        (b'{"a":' * 33 + b"1" + b"}" * 33, f"deeper than {MAX_JSON_DEPTH} levels"),
        (b'{"a": NaN}', "holds NaN"),
        (b'{"a": -Infinity}', "holds -Infinity"),
        (b'{"a": ' + b"9" * 20 + b"}", "integer of 20 digits"),
        (b'{"a": "\xe9"}', "not UTF-8"),
        (b"[]", "must be a JSON object"),
        (b'{"a": ', "not valid JSON"),
    ],
)
def test_bad_json_is_refused(body: bytes, reason: str) -> None:
    assert reason in refused(decode_json_object, body)


def test_brackets_inside_strings_are_not_nesting() -> None:
    text = '"' + "[{" * 1000 + '\\"' + '"'
    assert decode_json_object(('{"yaml": ' + text + "}").encode())["yaml"].startswith("[{")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("93", "not a string"),
        (" 9", "not a string"),
        (94.0, "not a number"),
        (True, "not a boolean"),
        ([1], "not a list"),
        (-1, "from 0 to"),
        (MAX_INT + 1, "from 0 to"),
    ],
)
def test_integer_fields_are_json_integers_in_bounds(value: object, reason: str) -> None:
    assert reason in refused(json_int, value, "expected_version")


def test_integer_fields_accept_integers() -> None:
    assert json_int(0, "v") == 0 and json_int(MAX_INT, "v") == MAX_INT
    assert json_int(None, "v") is None
    assert "v is required" in refused(json_int, None, "v", required=True)


@pytest.mark.parametrize(
    "text", ["+1", " 1", "1.0", "0x10", "-1", "１", "99999999999999999999999", "1e3"]
)
def test_query_integers_are_plain_digits_in_bounds(text: str) -> None:
    assert "version" in refused(query_int, text, "version", minimum=1)


def test_query_values() -> None:
    assert query_int("42", "n") == 42 and query_int("", "n") is None
    assert query_number("2.5", "wait", default=30) == 2.5
    assert query_number(None, "wait", default=30) == 30
    for bad in ("nan", "inf", "1e999", "-1", "1_0", " 5"):
        assert "wait must be" in refused(query_number, bad, "wait", default=30)
    assert json_bool(None, "prune") is False and json_bool(True, "prune") is True
    assert "not a string" in refused(json_bool, "false", "prune")
