"""JSON Schema validation with readable reasons.

The schema files in `schemas/` are the published contract (editors and other tools can use
them). jsonschema is imported on first use only: this package must import fast because the
Terraform provider loads it for plan-time validation.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from functools import cache
from typing import Any

from . import pointer

__all__ = ["SCHEMAS_DIR", "load_schema", "schema_problems"]

# controlplane/schemas: a symlink to the top-level schemas/ in a checkout, a real folder in the
# wheel (see pyproject.toml). os.path rather than pathlib: pathlib alone costs several ms of
# import time.
SCHEMAS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schemas")

_lock = threading.Lock()

_TYPE_WANTED = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}
_SECRET_WORDS = ("secret", "password", "passwd", "token", "apikey", "api_key", "credential")
_SECRET_HINT = (
    "; secrets never go into configuration: put the secret in a file on the server host "
    "and name it with clientSecretFile"
)


def actual_type(value: object) -> str:
    """How a value reads to a YAML author."""
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    return type(value).__name__


def show(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def load_schema(section: str, version: str) -> dict[str, Any]:
    """The parsed schema file `schemas/<section>.<version>.json` (read once, cached)."""
    return _load(section, version)


@cache
def _load(section: str, version: str) -> dict[str, Any]:
    path = os.path.join(SCHEMAS_DIR, f"{section}.{version}.json")
    try:
        with open(path, encoding="utf-8") as handle:
            schema: dict[str, Any] = json.load(handle)
    except FileNotFoundError:
        raise RuntimeError(f"schema file {path} is missing from the installation") from None
    return schema


@cache
def _validator(section: str, version: str) -> Any:
    with _lock:  # the first import of jsonschema is not something to race on
        import jsonschema

    schema = load_schema(section, version)
    validator_class = jsonschema.validators.validator_for(schema)
    return validator_class(schema)


def _secretish(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _names(schema: dict[str, Any]) -> list[str]:
    return list(schema.get("properties", {}))


def _translate(error: Any) -> list[tuple[str, str]]:
    """One jsonschema error -> [(pointer, reason)]; a reason never echoes a free-form value."""
    path: Sequence[str | int] = list(error.absolute_path)
    where = pointer.from_path(path)
    keyword: str = error.validator
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    instance = error.instance
    in_property_names = "propertyNames" in error.absolute_schema_path

    if keyword == "additionalProperties" and isinstance(instance, dict):
        allowed = _names(schema)
        out = []
        for key in instance:
            if key in allowed:
                continue
            reason = f"unknown field {show(key)}; allowed: {', '.join(allowed) or 'none'}"
            out.append(
                (pointer.join(where, key), reason + (_SECRET_HINT if _secretish(key) else ""))
            )
        return out
    if keyword == "required" and isinstance(instance, dict):
        return [
            (pointer.join(where, name), f"required field {name!r} is missing")
            for name in error.validator_value
            if name not in instance
        ]
    if keyword == "type":
        wanted = error.validator_value
        wanted_list = wanted if isinstance(wanted, list) else [wanted]
        reason = (
            f"must be {' or '.join(_TYPE_WANTED.get(str(w), str(w)) for w in wanted_list)}, "
            f"got {actual_type(instance)}"
        )
        if "object" in wanted_list and instance is None:
            reason += " (write {} for an empty mapping)"
        if path and path[-1] == "clientSecret" and isinstance(instance, str | int):
            reason += _SECRET_HINT
        return [(where, reason)]
    if keyword == "enum":
        return [
            (
                where,
                f"must be one of {', '.join(map(str, error.validator_value))}; got {show(instance)}",
            )
        ]
    if keyword == "const":
        return [(where, f"must be {error.validator_value!r}")]
    if keyword in ("maxProperties", "minProperties") and isinstance(instance, dict):
        return [(where, _properties_count_reason(keyword, schema, instance, path))]
    if keyword in ("minLength", "maxLength"):
        if in_property_names:
            limit = error.validator_value
            what = (
                "must not be empty"
                if keyword == "minLength"
                else f"is longer than {limit} characters"
            )
            return [(pointer.join(where, str(instance)), f"name {what}")]
        if keyword == "minLength":
            return [(where, "must not be empty")]
        return [(where, f"must be at most {error.validator_value} characters")]
    if keyword == "pattern":
        description = str(schema.get("description", "")).rstrip(".")
        if description:
            return [(where, "must be " + description[0].lower() + description[1:])]
        return [(where, f"must match the pattern {error.validator_value}")]
    return [(where, str(error.message))]


def _properties_count_reason(
    keyword: str, schema: dict[str, Any], instance: dict[str, Any], path: Sequence[str | int]
) -> str:
    names = _names(schema)
    present = ", ".join(str(key) for key in instance) or "none"
    if names:
        exactly = schema.get("minProperties") == 1 and schema.get("maxProperties") == 1
        quantity = (
            "exactly one"
            if exactly
            else ("at most one" if keyword == "maxProperties" else "at least one")
        )
        return f"set {quantity} of {', '.join(names)}; got: {present}"
    if path and path[-1] == "keyTags":
        return (
            f"at most {schema.get('maxProperties')} tags (Key Vault allows 15 per key and the "
            f"server sets 3 of its own); got {len(instance)}"
        )
    limit = schema.get(keyword)
    return f"must have {'at most' if keyword == 'maxProperties' else 'at least'} {limit} entries"


def schema_problems(section: str, version: str, document: Any) -> list[tuple[str, str]]:
    """Validate a whole document against its schema file; [(pointer, reason)], sorted."""
    validator = _validator(section, version)
    problems: list[tuple[str, str]] = []
    for error in validator.iter_errors(document):
        problems.extend(_translate(error))
    # One issue per (pointer, reason): a failure under $ref can surface twice.
    return sorted(set(problems))
