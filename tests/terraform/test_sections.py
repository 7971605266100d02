"""The `sections` map logic: canonical comparison, drift merge, validation (no Terraform here)."""

from __future__ import annotations

import pytest
from tf.types import Unknown

from controlplane.terraform import sections as sec

pytestmark = pytest.mark.terraform

KM = """\
section: KeyManager
schema: v1
spec:
  extensions:
    azureKeyVault:
      vaultURL: "https://my-key-vault.vault.azure.net/"
      keyTags: {team: identity}
"""
KM_REFORMATTED = """\
# a comment
spec:
    extensions: {azureKeyVault: {keyTags: {team: 'identity'}, vaultURL: https://my-key-vault.vault.azure.net/}}
schema: "v1"
section: KeyManager
"""
KM_OTHER = KM.replace("identity", "platform")
KL = "section: KeyLifecycle\nschema: v1\nspec: {jwtKeyTTL: 12h}\n"


def test_reformatting_is_equivalent() -> None:
    assert sec.maps_equivalent({"KeyManager": KM}, {"KeyManager": KM_REFORMATTED})
    assert not sec.maps_equivalent({"KeyManager": KM}, {"KeyManager": KM_OTHER})


def test_key_sets_and_unknowns() -> None:
    assert not sec.maps_equivalent({"KeyManager": KM}, {"KeyManager": KM, "KeyLifecycle": KL})
    assert not sec.maps_equivalent({"KeyManager": KM}, {"KeyManager": Unknown})
    assert not sec.maps_equivalent({"KeyManager": KM}, Unknown)  # type: ignore[arg-type]
    assert sec.maps_equivalent({}, {})


def test_invalid_text_compares_verbatim() -> None:
    bad = "section: KeyManager\nschema: v1\nspec: {extensions: {nope: {}}}\n"
    assert sec.canonical(bad) is None
    assert sec.maps_equivalent({"KeyManager": bad}, {"KeyManager": bad})
    assert not sec.maps_equivalent({"KeyManager": bad}, {"KeyManager": bad + "# x\n"})


def test_merge_keeps_user_text_only_when_equivalent() -> None:
    server = {"KeyManager": sec.canonical(KM) or "", "KeyLifecycle": KL}
    merged = sec.merge_server_sections({"KeyManager": KM_REFORMATTED}, server)
    assert merged["KeyManager"] == KM_REFORMATTED  # same content: user's text stays
    assert merged["KeyLifecycle"] == KL  # added on the server: shows up (drift)
    drifted = sec.merge_server_sections({"KeyManager": KM_OTHER}, server)
    assert drifted["KeyManager"] == server["KeyManager"]  # changed on the server: server's text


def test_validate_reports_entry_and_pointer() -> None:
    problems = sec.validate_sections(
        {
            "KeyManager": KM.replace("https://", "http://"),
            "Lifecycle": KL,
            "Later": Unknown,
            "KeyLifecycle": KL + "---\n" + KL,
        },
        "cluster",
    )
    by_key = {(p.key, p.pointer) for p in problems}
    assert ("KeyManager", "/spec/extensions/azureKeyVault/vaultURL") in by_key
    assert ("Lifecycle", "/section") in by_key
    assert any(p.key == "KeyLifecycle" for p in problems)
    assert not any(p.key == "Later" for p in problems)  # unknown until apply
    km = next(p for p in problems if p.key == "KeyManager")
    assert km.summary == 'Invalid sections["KeyManager"] at /spec/extensions/azureKeyVault/vaultURL'
    assert km.detail.startswith('sections["KeyManager"], JSON Pointer /spec/extensions/')


def test_scope_is_checked() -> None:
    problems = sec.validate_sections({"KeyManager": KM}, "trust-domain")
    assert [p.pointer for p in problems] == ["/section"]


def test_upload_text_is_stable_multi_document() -> None:
    text = sec.upload_text({"KeyManager": KM, "KeyLifecycle": KL.rstrip("\n")})
    assert text.index("KeyLifecycle") < text.index("KeyManager")
    assert text.count("---\n") == 1 and text.endswith("\n")
    assert sec.canonical(text) is not None


def test_server_sections_from_api_body() -> None:
    body = {"sections": {"KeyManager": {"schema": "v1", "yaml": KM, "document": {}}}}
    assert sec.server_sections(body) == {"KeyManager": KM}
    assert sec.server_sections({"version": 0, "sections": {}}) == {}


def test_null_and_empty_entries_are_problems_not_crashes() -> None:
    problems = sec.validate_sections(
        {"KeyManager": None, "KeyLifecycle": "  \n", "Later": Unknown}, "cluster"
    )
    reasons = {p.key: p.reason for p in problems}
    assert reasons["KeyManager"].startswith("is null: remove the entry")
    assert reasons["KeyLifecycle"].startswith("is empty")
    assert "Later" not in reasons
    assert not sec.all_known({"KeyManager": KM, "Later": Unknown})
    assert sec.validate_sections({}, "cluster") == []  # an empty map: an empty scope


def test_trust_domain_rules_apply_when_given() -> None:
    shared = (
        "section: KeyManager\nschema: v1\nspec:\n  extensions:\n    azureKeyVault:\n"
        '      vaultURL: "https://v.vault.azure.net/"\n      sharedKeys:\n'
        '        keyNameTemplate: \'spire-{{ .TrustDomain | replace "." "-" }}-{{ .KeyID }}\'\n'
        "        keyIdExtractionRegex: '^spire-example-org-(.+)$'\n"
    )
    assert sec.validate_sections({"KeyManager": shared}, "cluster") == []
    assert sec.validate_sections({"KeyManager": shared}, "cluster", "example.org") == []
    (problem,) = sec.validate_sections({"KeyManager": shared}, "cluster", "acme.com")
    assert problem.pointer.endswith("/keyIdExtractionRegex")
    assert "'spire-acme-com-jwt-signer-a'" in problem.reason


def test_entry_labels_for_the_section_resource() -> None:
    (problem,) = sec.entry_problems(
        "KeyManager", KL, "cluster", key_label="`section`", value_label="`yaml`"
    )
    assert problem.pointer == "/section" and problem.reason.startswith("`section` must equal")
    two = KL + "---\n" + KM
    (problem,) = sec.entry_problems("KeyLifecycle", two, "cluster", value_label="`yaml`")
    assert "`yaml` must hold exactly one document" in problem.reason
