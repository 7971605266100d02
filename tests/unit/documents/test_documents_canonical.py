"""Canonical form, digests, rebuilding stored sections, and diffs."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from controlplane.documents import (
    Section,
    SectionDiff,
    diff_sections,
    parse_sections,
    section_from_stored,
)

BASE = """\
section: KeyManager
schema: v1
spec:
  extensions:
    azureKeyVault:
      vaultURL: "https://my-key-vault.vault.azure.net/"
      keyType: ec-p384
      keyTags:
        team: identity
        env: prod
"""

SAME_WRITTEN_DIFFERENTLY = [
    # flow style, other key order, other quoting
    "{spec: {extensions: {azureKeyVault: {keyTags: {env: 'prod', team: identity}, "
    'keyType: "ec-p384", vaultURL: https://my-key-vault.vault.azure.net/}}}, '
    "schema: v1, section: KeyManager}\n",
    # comments, explicit document markers, odd indentation, trailing spaces
    "%YAML 1.1\n---  # KeyManager for prod\nschema:    'v1'   \nsection: \"KeyManager\"\n"
    "spec:\n    extensions:\n        azureKeyVault:\n            keyTags: {team: identity,\n"
    "                      env: prod}\n            vaultURL: >-\n"
    "              https://my-key-vault.vault.azure.net/\n            keyType: ec-p384\n...\n",
    # an anchor and alias, CRLF line ends
    BASE.replace("      keyType: ec-p384\n", "      keyType: &t ec-p384\n").replace("\n", "\r\n"),
]


def one(text: str | bytes) -> Section:
    (section,) = parse_sections(text, scope="cluster")
    return section


@pytest.mark.parametrize("variant", SAME_WRITTEN_DIFFERENTLY)
def test_same_document_written_differently_has_one_canonical_form(variant: str) -> None:
    base, other = one(BASE), one(variant)
    assert other.canonical_yaml == base.canonical_yaml
    assert other.digest == base.digest
    assert other.document == base.document


def test_canonical_yaml_layout() -> None:
    assert one(BASE).canonical_yaml == (
        "section: KeyManager\n"
        "schema: v1\n"
        "spec:\n"
        "  extensions:\n"
        "    azureKeyVault:\n"
        "      keyTags:\n"
        "        env: prod\n"
        "        team: identity\n"
        "      keyType: ec-p384\n"
        "      vaultURL: https://my-key-vault.vault.azure.net/\n"
    )
    assert one("section: KeyManager\nschema: v1\nspec: {}\n").canonical_yaml == (
        "section: KeyManager\nschema: v1\nspec: {}\n"
    )


def test_canonical_yaml_reads_back_to_the_same_section() -> None:
    tricky = BASE.replace(
        "team: identity",
        "team: identity\n        created: 2024-01-01\n        'yes': 'no'\n        num: '007'",
    )
    section = one(tricky)
    assert yaml.safe_load(section.canonical_yaml) == section.document
    again = one(section.canonical_yaml)
    assert again.digest == section.digest
    assert again.canonical_yaml == section.canonical_yaml


def test_digest_is_sha256_of_canonical_json() -> None:
    section = one(BASE)
    text = json.dumps(section.document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert section.digest == "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_different_documents_have_different_digests() -> None:
    assert one(BASE).digest != one(BASE.replace("prod", "test")).digest


def test_section_from_stored_rebuilds_the_same_section() -> None:
    section = one(BASE)
    stored = json.loads(json.dumps(section.document))
    rebuilt = section_from_stored(stored)
    assert rebuilt == section
    with pytest.raises(ValueError, match="section, schema and spec"):
        section_from_stored({"section": "KeyManager", "schema": "v1"})


def test_section_document_shares_nothing_with_aliases() -> None:
    text = BASE.replace("team: identity", "team: &v identity\n        owner: *v")
    section = one(text)
    tags = section.spec["extensions"]["azureKeyVault"]["keyTags"]
    assert tags["owner"] == tags["team"] == "identity"
    assert "&" not in section.canonical_yaml and "*" not in section.canonical_yaml


def test_diff_sections() -> None:
    km_old = one(BASE)
    km_new = one(BASE.replace("prod", "test"))
    lifecycle = one("section: KeyLifecycle\nschema: v1\nspec: {jwtKeyTTL: 1h}\n")
    webhook_less = one("section: KeyManager\nschema: v1\nspec: {}\n")
    old = {"KeyManager": km_old, "KeyLifecycle": lifecycle}
    new = {"KeyManager": km_new, "Zeta": webhook_less}
    assert diff_sections(old, new) == [
        SectionDiff("KeyLifecycle", "removed", lifecycle.canonical_yaml, None),
        SectionDiff("KeyManager", "changed", km_old.canonical_yaml, km_new.canonical_yaml),
        SectionDiff("Zeta", "added", None, webhook_less.canonical_yaml),
    ]
    same = diff_sections({"KeyManager": km_old}, {"KeyManager": one(SAME_WRITTEN_DIFFERENTLY[0])})
    assert [d.change for d in same] == ["unchanged"]
    assert diff_sections({}, {}) == []
