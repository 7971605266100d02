"""The bad-document corpus as data, for any test that wants to feed it somewhere.

`load_cases()` returns the files of `bad/` with their expectations from `bad/expected.yaml`
plus a few generated inputs too big to commit. Import it by path (tests/ is on sys.path
through the root conftest): `from corpus.bad_corpus import load_cases`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import yaml

__all__ = ["BAD_DIR", "BadCase", "generated_cases", "load_cases"]

BAD_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bad")
INPUT_REJECTED = "input_rejected"
VALIDATION_FAILED = "validation_failed"


@dataclass(frozen=True)
class BadCase:
    name: str
    data: bytes
    kind: str  # "input_rejected" (HTTP 400/413) | "validation_failed" (HTTP 422)
    reason: str  # substring of the reason
    pointer: str | None = None  # validation_failed: pointer of the issue carrying `reason`
    scope: str = "cluster"  # scope the upload is made at
    # name of that scope's trust domain, for checks that depend on it (None: not given)
    trust_domain: str | None = None
    document: int | None = None  # validation_failed: document index of that issue
    too_large: bool = False  # input_rejected: HTTP 413 rather than 400

    def __str__(self) -> str:
        return self.name


def generated_cases() -> list[BadCase]:
    """Inputs built at run time: too big to keep as files."""
    one_mib = 1_048_576
    big_value = "a" * 300_000
    wide = "section: KeyManager\nschema: v1\nspec:\n  tags:\n" + "".join(
        f"    k{i}: v\n" for i in range(6_000)
    )
    return [
        BadCase(
            "gen-upload-too-large",
            b"# padding\n" * (one_mib // 10 + 1),
            INPUT_REJECTED,
            "upload is larger than 1048576 bytes",
            too_large=True,
        ),
        BadCase(
            "gen-document-too-large",
            f'section: KeyManager\nschema: v1\nspec:\n  note: "{big_value}"\n'.encode(),
            INPUT_REJECTED,
            "document 0 is larger than 262144 bytes",
            too_large=True,
        ),
        BadCase(
            "gen-nesting-100k-deep",
            b"[" * 100_000 + b"]" * 100_000,
            INPUT_REJECTED,
            "deeper than 32 levels",
        ),
        BadCase(
            "gen-12k-nodes",
            wide.encode(),
            INPUT_REJECTED,
            "more than 10000 YAML nodes",
        ),
    ]


def load_cases() -> list[BadCase]:
    with open(os.path.join(BAD_DIR, "expected.yaml"), encoding="utf-8") as handle:
        expected = yaml.safe_load(handle)
    cases = []
    for name in sorted(expected):
        spec = expected[name]
        with open(os.path.join(BAD_DIR, name), "rb") as handle:
            data = handle.read()
        cases.append(
            BadCase(
                name=name,
                data=data,
                kind=spec["kind"],
                reason=spec["reason"],
                pointer=spec.get("pointer"),
                scope=spec.get("scope", "cluster"),
                trust_domain=spec.get("trust_domain"),
                document=spec.get("document"),
                too_large=spec.get("too_large", False),
            )
        )
    return cases + generated_cases()
