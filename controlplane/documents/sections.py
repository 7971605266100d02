"""Sections: parse an upload, validate every document, canonicalise."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import DocumentValidationError, ValidationIssue
from .limits import DEFAULT_LIMITS, Limits
from .registry import SCOPES, section_types
from .rules import RULES
from .safe_yaml import load_documents
from .schema_check import schema_problems, show

__all__ = [
    "Section",
    "canonical_json",
    "canonical_yaml",
    "parse_sections",
    "section_from_stored",
    "validate_document",
]

UNKNOWN_SECTION = "<document>"


class _CanonicalDumper(yaml.SafeDumper):
    """SafeDumper that never writes anchors: equal documents must give equal text."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def canonical_json(document: dict[str, Any]) -> str:
    """Compact JSON, keys sorted: the form the digest is taken of."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def canonical_yaml(document: dict[str, Any]) -> str:
    """Block YAML: section, schema, spec first (in that order), every nested key sorted."""
    head = [key for key in ("section", "schema", "spec") if key in document]
    ordered: dict[str, Any] = {key: _sorted(document[key]) for key in head}
    ordered.update({key: _sorted(document[key]) for key in sorted(document) if key not in ordered})
    text: str = yaml.dump(
        ordered,
        Dumper=_CanonicalDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=float("inf"),
    )
    return text


@dataclass(frozen=True)
class Section:
    """One validated section document in canonical form."""

    name: str
    schema: str
    document: dict[str, Any]
    canonical_yaml: str
    digest: str

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.document["spec"]
        return spec


def _make_section(document: dict[str, Any]) -> Section:
    text = canonical_json(document)
    return Section(
        name=str(document["section"]),
        schema=str(document["schema"]),
        # A fresh copy through JSON: no objects shared with the caller or between aliases.
        document=json.loads(text),
        canonical_yaml=canonical_yaml(document),
        digest="sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def section_from_stored(document: dict[str, Any]) -> Section:
    """Rebuild a Section from a document stored earlier (already validated: not re-checked)."""
    if not (
        isinstance(document, dict)
        and isinstance(document.get("section"), str)
        and isinstance(document.get("schema"), str)
        and isinstance(document.get("spec"), dict)
    ):
        raise ValueError("stored document must be a mapping with section, schema and spec")
    return _make_section(document)


def validate_document(
    document: dict[str, Any],
    index: int | None = None,
    scope: str | None = None,
    trust_domain: str | None = None,
) -> list[ValidationIssue]:
    """Every issue of one parsed document (empty list: valid).

    `trust_domain` is the name of the scope's trust domain; without it the checks that depend
    on it are deferred (see rules.py).
    """
    types = section_types()
    known = ", ".join(sorted(types))

    def issue(section: str, where: str, reason: str) -> ValidationIssue:
        return ValidationIssue(section, where, reason, index)

    name = document.get("section")
    if "section" not in document:
        return [
            issue(
                UNKNOWN_SECTION,
                "/section",
                f"required field 'section' is missing; known sections: {known}",
            )
        ]
    if not isinstance(name, str):
        return [
            issue(
                UNKNOWN_SECTION,
                "/section",
                f"must be a string naming a section; known sections: {known}",
            )
        ]
    section_type = types.get(name)
    if section_type is None:
        return [
            issue(
                UNKNOWN_SECTION,
                "/section",
                f"unknown section {show(name)}; known sections: {known}",
            )
        ]

    issues: list[ValidationIssue] = []
    if scope is not None and scope not in section_type.allowed_scopes:
        issues.append(
            issue(
                name,
                "/section",
                f"{name} cannot be set at scope {scope}; allowed scopes: "
                + ", ".join(section_type.allowed_scopes),
            )
        )
    version = document.get("schema")
    versions = ", ".join(section_type.versions)
    if "schema" not in document:
        issues.append(
            issue(
                name,
                "/schema",
                f"required field 'schema' is missing; versions of {name}: {versions}",
            )
        )
    elif not isinstance(version, str):
        issues.append(
            issue(
                name,
                "/schema",
                f"must be a string naming a schema version; versions of {name}: {versions}",
            )
        )
    elif version not in section_type.versions:
        issues.append(
            issue(
                name,
                "/schema",
                f"unknown schema version {show(version)} for {name}; versions: {versions}",
            )
        )
    if issues and issues[-1].pointer == "/schema":
        return issues

    assert isinstance(version, str)
    rule_problems = RULES[(name, version)](document.get("spec"), trust_domain)
    ruled = {where for where, _ in rule_problems}
    problems = [p for p in schema_problems(name, version, document) if p[0] not in ruled]
    problems.extend(rule_problems)
    issues.extend(issue(name, where, reason) for where, reason in sorted(problems))
    return issues


def parse_sections(
    data: bytes | str,
    scope: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    trust_domain: str | None = None,
) -> list[Section]:
    """Parse and validate an upload of one or more YAML documents.

    `trust_domain` (the name of the scope's trust domain) enables the checks that depend on it.

    Raises InputRejectedError for hostile or malformed input, else DocumentValidationError
    listing every issue of every document. Issue `document` indexes count every document in
    the stream (empty ones too), from 0. Sections come back in upload order.
    """
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; scopes: {', '.join(SCOPES)}")
    documents, _total = load_documents(data, limits)
    if not documents:
        raise DocumentValidationError(
            [
                ValidationIssue(
                    UNKNOWN_SECTION,
                    "",
                    "the upload holds no YAML document; expected documents with section, schema and spec",
                    None,
                )
            ]
        )
    issues: list[ValidationIssue] = []
    sections: list[Section] = []
    first_seen: dict[str, int] = {}
    for index, document in documents:
        document_issues = validate_document(document, index, scope, trust_domain)
        name = document.get("section")
        if isinstance(name, str) and name in section_types():
            if name in first_seen:
                document_issues.insert(
                    0,
                    ValidationIssue(
                        name,
                        "/section",
                        f"section {name} appears more than once in this upload "
                        f"(first in document {first_seen[name]}); each section may appear once",
                        index,
                    ),
                )
            else:
                first_seen[name] = index
        issues.extend(document_issues)
        if not document_issues:
            sections.append(_make_section(document))
    if issues:
        raise DocumentValidationError(issues)
    return sections
