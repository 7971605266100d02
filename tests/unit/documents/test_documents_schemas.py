"""The published JSON Schema files: valid draft 2020-12, strict, described, in step with code."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from controlplane.documents import section_types
from controlplane.documents.schema_check import SCHEMAS_DIR

SCHEMA_FILES = sorted(f for f in os.listdir(SCHEMAS_DIR) if f.endswith(".json"))
# keyTags is a free map of user tags: its values are constrained, its names cannot be listed.
FREE_MAPS = {"keyTags"}


def load(name: str) -> dict[str, Any]:
    with open(os.path.join(SCHEMAS_DIR, name), encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    return schema


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}/{index}")


def test_one_schema_file_per_section_version() -> None:
    expected = sorted(
        f"{name}.{version}.json" for name, t in section_types().items() for version in t.versions
    )
    assert expected == SCHEMA_FILES


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_is_valid_strict_and_described(name: str) -> None:
    schema = load(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    section, version, _ = name.split(".")
    assert schema["properties"]["section"] == {"const": section, "description": "Section name."}
    assert schema["properties"]["schema"]["const"] == version
    for path, node in walk(schema):
        if node.get("type") == "object":
            last = path.rsplit("/", 1)[-1]
            if last in FREE_MAPS:
                assert isinstance(node.get("additionalProperties"), dict), path
            else:
                assert node.get("additionalProperties") is False, path
        if path.endswith("/properties"):
            for prop, sub in node.items():
                described = "description" in sub or (
                    "$ref" in sub and "description" in schema["$defs"][sub["$ref"].split("/")[-1]]
                )
                assert described, f"{path}/{prop} has no description"
