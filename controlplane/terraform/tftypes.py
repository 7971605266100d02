"""A Terraform object type for tf's schema (tf 1.2 has lists, maps and sets, but no objects).

Used for computed, structured values of data sources (a server's status, a section of the
effective config). Each attribute carries its description, so the docs can list it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tf.types import Number, String, TfType, Unknown

__all__ = ["Field", "Object"]


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


def _conform(kind: TfType, value: Any) -> Any:
    if isinstance(kind, Number):
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if isinstance(kind, String):
        return value if isinstance(value, str) else None
    return value
