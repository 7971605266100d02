"""The `sections` map of the config resources: validation, canonical comparison, upload text.

A `sections` value maps a section name to the YAML text of exactly one document of that section.
Comparison is by canonical form (controlplane.documents), so reformatting (whitespace, key order,
quoting) is no change. The comparison is whole-map: Terraform only accepts a planned value that
equals either the config or the prior state, so a per-key "keep the old text" is impossible.

controlplane.documents (and through it yaml/jsonschema) is imported on first use only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SectionProblem:
    """One problem with one map entry, for a diagnostic at `sections["<key>"]`."""

    key: str
    pointer: str
    reason: str

    @property
    def summary(self) -> str:
        where = f" at {self.pointer}" if self.pointer else ""
        return f'Invalid sections["{self.key}"]{where}'

    @property
    def detail(self) -> str:
        pointer = self.pointer or "(document)"
        return f'sections["{self.key}"], JSON Pointer {pointer}: {self.reason}'


def is_known_text(value: Any) -> bool:
    """Values Terraform does not know yet arrive as a non-str sentinel: treat them as unknown."""
    return isinstance(value, str)


def validate_sections(
    sections: Mapping[str, Any], scope: str, trust_domain: str | None = None
) -> list[SectionProblem]:
    """Every problem of every known entry: null or empty, YAML, schema, scope, the rules of the
    scope's trust domain (when given; else those checks wait for it), and key == the section."""
    problems: list[SectionProblem] = []
    for key in sorted(sections):
        problems += entry_problems(key, sections[key], scope, trust_domain)
    return problems


def entry_problems(
    key: str,
    text: Any,
    scope: str,
    trust_domain: str | None = None,
    *,
    key_label: str = "the map key",
    value_label: str = "each map entry",
) -> list[SectionProblem]:
    """The problems of one section's text `text`, which must be one document of section `key`.
    The labels name the two in messages (spirl_config_section: `section` and `yaml`)."""
    from controlplane.documents import (
        DocumentValidationError,
        InputRejectedError,
        parse_sections,
    )

    if text is None:
        return [
            SectionProblem(
                key, "", f"is null: remove the entry, or give the YAML of one {key} document"
            )
        ]
    if not is_known_text(text):
        return []  # unknown until apply; checked then
    if not text.strip():
        return [SectionProblem(key, "", f"is empty: give the YAML of one {key} document")]
    try:
        parsed = parse_sections(text, scope=scope, trust_domain=trust_domain)
    except InputRejectedError as exc:
        return [SectionProblem(key, "", str(getattr(exc, "reason", exc)))]
    except DocumentValidationError as exc:
        return [SectionProblem(key, issue.pointer, issue.reason) for issue in exc.issues]
    if len(parsed) != 1:
        return [
            SectionProblem(
                key,
                "",
                f"holds {len(parsed)} documents; {value_label} must hold exactly one "
                f"document, of section {key!r}",
            )
        ]
    if parsed[0].name != key:
        return [
            SectionProblem(
                key,
                "/section",
                f"{key_label} must equal the document's section: {key!r} vs "
                f"section {parsed[0].name!r}",
            )
        ]
    return []


def all_known(sections: Mapping[str, Any]) -> bool:
    """Whether every value is known text (so the whole map can be checked now)."""
    return all(is_known_text(v) for v in sections.values())


def canonical(text: str) -> str | None:
    """Canonical YAML of a one-or-more-document text, or None when it does not parse/validate."""
    from controlplane.documents import (
        DocumentValidationError,
        InputRejectedError,
        parse_sections,
    )

    try:
        parsed = parse_sections(text)
    except (DocumentValidationError, InputRejectedError):
        return None
    return "---\n".join(s.canonical_yaml for s in parsed)


def texts_equivalent(a: str, b: str) -> bool:
    if a == b:
        return True
    ca = canonical(a)
    return ca is not None and ca == canonical(b)


def maps_equivalent(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Same keys and every value canonically equal. Unknown values are never equivalent."""
    if a is None or b is None:
        return a is b
    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        return False
    if set(a) != set(b):
        return False
    for key in a:
        va, vb = a[key], b[key]
        if not (is_known_text(va) and is_known_text(vb)):
            return False
        if not texts_equivalent(va, vb):
            return False
    return True


def merge_server_sections(
    prior: Mapping[str, Any] | None, server: Mapping[str, str]
) -> dict[str, str]:
    """The state's view after a read: the server's sections, but the user's own text wherever it
    is canonically equal to the server's (so a reformatted config stays a no-op and the state
    keeps what the user wrote)."""
    result: dict[str, str] = {}
    for name, server_text in server.items():
        mine = prior.get(name) if isinstance(prior, Mapping) else None
        if isinstance(mine, str) and texts_equivalent(mine, server_text):
            result[name] = mine
        else:
            result[name] = server_text
    return result


def upload_text(sections: Mapping[str, str]) -> str:
    """One multi-document YAML text, sections in name order (stable requests, readable audit)."""
    parts: list[str] = []
    for name in sorted(sections):
        text = sections[name]
        if not text.endswith("\n"):
            text += "\n"
        parts.append(text)
    return "---\n".join(parts)


def server_sections(config: Mapping[str, Any]) -> dict[str, str]:
    """`{"KeyManager": "<yaml>"}` from a `GET /v1/config/...` body."""
    out: dict[str, str] = {}
    raw = config.get("sections") or {}
    if isinstance(raw, Mapping):
        for name, body in raw.items():
            if isinstance(body, Mapping) and isinstance(body.get("yaml"), str):
                out[str(name)] = body["yaml"]
    return out
