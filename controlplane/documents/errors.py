"""Error types of the document layer.

Two kinds, because the HTTP API answers them differently: input we refuse to even read
(hostile or malformed YAML -> 400/413) and documents we read but that break a rule (-> 422,
with every issue listed at once).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["DocumentValidationError", "InputRejectedError", "ValidationIssue"]


@dataclass(frozen=True)
class ValidationIssue:
    """One broken rule: where (section, JSON Pointer, document index) and why."""

    section: str
    pointer: str
    reason: str
    document: int | None = None

    def __str__(self) -> str:
        where = self.section or "<document>"
        # "" is the whole document (RFC 6901); "/" would mean a key named "".
        return (
            f"{where} {self.pointer}: {self.reason}" if self.pointer else f"{where}: {self.reason}"
        )

    def to_dict(self) -> dict[str, object]:
        """The shape the HTTP API puts in `errors` of a 422 answer."""
        return {
            "section": self.section,
            "pointer": self.pointer,
            "reason": self.reason,
            "document": self.document,
        }


class DocumentValidationError(Exception):
    """Documents that parse but break schema or semantic rules (HTTP 422)."""

    def __init__(self, issues: Iterable[ValidationIssue]) -> None:
        self.issues: list[ValidationIssue] = list(issues)
        count = len(self.issues)
        head = "; ".join(str(issue) for issue in self.issues[:3])
        more = f" (and {count - 3} more)" if count > 3 else ""
        super().__init__(f"{count} validation issue{'s' if count != 1 else ''}: {head}{more}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable: uploads are validated in a worker process
        return (type(self), (self.issues,))


class InputRejectedError(Exception):
    """Input refused before validation: hostile or malformed (HTTP 400, 413 when too_large)."""

    def __init__(self, reason: str, *, too_large: bool = False) -> None:
        self.reason = reason
        self.too_large = too_large
        super().__init__(reason)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_input_rejected, (self.reason, self.too_large))


def _input_rejected(reason: str, too_large: bool) -> InputRejectedError:
    return InputRejectedError(reason, too_large=too_large)
