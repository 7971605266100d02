"""A Terraform object type for tf's schema (tf 1.2 has lists, maps and sets, but no objects), and
a single nested attribute made of one (tf 1.2 has no nested attributes either).

`Object` is used for computed, structured values of data sources (a server's status, a section of
the effective config). Each attribute carries its description, so the docs can list it.
`NestedAttribute` is plugin protocol 6's nested attribute (`nesting = SINGLE`) whose fields are
all optional strings, e.g. `timeouts = { create = "10m" }`: an object-typed attribute would make
the user write every field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tf import schema
from tf.gen import tfplugin_pb2 as pb
from tf.types import Number, String, TfType, Unknown

__all__ = ["Field", "NestedAttribute", "Object"]


@dataclass(frozen=True)
class Field:
    name: str
    type: TfType
    description: str


class Object(TfType):
    """cty `object({...})`: a Python dict with exactly these keys (missing ones are null)."""

    def __init__(self, fields: list[Field]):
        self.fields = fields

    def encode(self, value: Any) -> Any:
        """Keeps only the declared keys; a number or string of the wrong type becomes null (the
        values come from the control plane, partly from servers' own reports)."""
        if value is None or value is Unknown:
            return value
        return {f.name: f.type.encode(_conform(f.type, value.get(f.name))) for f in self.fields}

    def decode(self, value: Any) -> Any:
        if value is None or value is Unknown:
            return value
        return {f.name: f.type.decode(value.get(f.name)) for f in self.fields}

    def tf_type(self) -> bytes:
        attributes = {f.name: json.loads(f.type.tf_type()) for f in self.fields}
        return json.dumps(["object", attributes], separators=(",", ":")).encode()


class NestedAttribute(schema.Attribute):
    """An optional attribute holding one object whose fields are each optional (and may be left
    out). Values are dicts, as with `Object`; the schema Terraform gets is a nested type."""

    def __init__(self, name: str, fields: list[Field], description: str):
        super().__init__(name, Object(fields), description=description, optional=True)
        self.fields = fields

    def to_pb(self) -> pb.Schema.Attribute:
        nested = pb.Schema.Object(
            attributes=[
                pb.Schema.Attribute(
                    name=f.name,
                    type=f.type.tf_type(),
                    description=f.description,
                    description_kind=pb.StringKind.MARKDOWN,
                    optional=True,
                )
                for f in self.fields
            ],
            nesting=pb.Schema.Object.NestingMode.SINGLE,
        )
        return pb.Schema.Attribute(
            name=self.name,
            nested_type=nested,
            description=self.description,
            description_kind=pb.StringKind.MARKDOWN,
            optional=True,
        )


def _conform(kind: TfType, value: Any) -> Any:
    if value is Unknown:
        return value  # a value Terraform does not know yet stays unknown
    if isinstance(kind, Number):
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if isinstance(kind, String):
        return value if isinstance(value, str) else None
    return value
