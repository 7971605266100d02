"""Valid documents, the public API's shapes, and each validation rule."""

from __future__ import annotations

import re

import pytest

from controlplane.documents import (
    SCOPES,
    DocumentValidationError,
    ValidationIssue,
    key_manager_type,
    parse_sections,
    section_types,
)
from controlplane.documents.rules import check_key_id_regex

# The vendor page's example (seeds/000), indented as on the original page.
VENDOR_SEED = """\
section: KeyManager
schema: v1
spec:
  extensions:
    azureKeyVault:
      vaultURL: "https://my-key-vault.vault.azure.net/"
"""

# The same document as the vendor's Terraform example carries it (heredoc, indented).
VENDOR_TERRAFORM = """\
    section: KeyManager
    schema: v1
    spec:
      extensions:
        azureKeyVault:
          vaultURL: "https://my-key-vault.vault.azure.net/"
"""

GUID = "8e2c3f7a-0b1d-4c5e-9f6a-1b2c3d4e5f60"
AKV = "/spec/extensions/azureKeyVault"


def key_manager(azure_body: str) -> str:
    head = "section: KeyManager\nschema: v1\nspec:\n  extensions:\n    azureKeyVault:\n"
    lines = azure_body.strip("\n").split("\n")
    return head + "".join("      " + line + "\n" for line in lines)


def issues_of(text: str | bytes, scope: str | None = "cluster") -> list[ValidationIssue]:
    with pytest.raises(DocumentValidationError) as caught:
        parse_sections(text, scope=scope)
    return caught.value.issues


def reasons_at(issues: list[ValidationIssue], pointer: str) -> list[str]:
    return [issue.reason for issue in issues if issue.pointer == pointer]


# -- valid documents ----------------------------------------------------------------------


@pytest.mark.parametrize("text", [VENDOR_SEED, VENDOR_TERRAFORM])
def test_vendor_seed_document_is_valid(text: str) -> None:
    for scope in ("trust-domain-deployment", "cluster"):
        (section,) = parse_sections(text, scope=scope)
        assert section.name == "KeyManager"
        assert section.schema == "v1"
        assert section.spec == {
            "extensions": {"azureKeyVault": {"vaultURL": "https://my-key-vault.vault.azure.net/"}}
        }
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", section.digest)
        assert key_manager_type(section.spec) == "azureKeyVault"


def test_design_example_with_key_tags() -> None:
    (section,) = parse_sections(
        key_manager('vaultURL: "https://my-key-vault.vault.azure.net/"\nkeyTags: {team: identity}')
    )
    assert section.spec["extensions"]["azureKeyVault"]["keyTags"] == {"team": "identity"}


@pytest.mark.parametrize(
    "text",
    [
        "section: KeyManager\nschema: v1\nspec: {}\n",
        "section: KeyManager\nschema: v1\nspec:\n  extensions: {}\n",
    ],
)
def test_empty_key_manager_is_the_default(text: str) -> None:
    (section,) = parse_sections(text, scope="cluster")
    assert key_manager_type(section.spec) == "default"


def test_every_azure_field() -> None:
    text = key_manager(
        f"""
vaultURL: "https://127.0.0.1:8443"
keyType: rsa-4096
keyTags:
  team: identity
  cost-center: "1234"
  created: 2024-01-01
  "{"t" * 256}": "{"v" * 256}"
sharedKeys:
  keyNameTemplate: 'spire-{{{{ .TrustDomain | sha256sum | trunc 8 }}}}-{{{{ .KeyID }}}}'
  keyIdExtractionRegex: '^spire-[0-9a-f]{{8}}-(.+)$'
credentials:
  clientSecret:
    tenantID: {GUID}
    clientID: {GUID.upper()}
    clientSecretFile: /etc/spirl/azure-client-secret
"""
    )
    (section,) = parse_sections(text)
    akv = section.spec["extensions"]["azureKeyVault"]
    # Unquoted dates stay text: tag values are strings, and documents stay JSON.
    assert akv["keyTags"]["created"] == "2024-01-01"
    assert akv["keyTags"]["cost-center"] == "1234"
    assert akv["keyType"] == "rsa-4096"


@pytest.mark.parametrize(
    "credentials",
    [
        "workloadIdentity: {}",
        f"workloadIdentity: {{clientID: {GUID}, tenantID: {GUID}}}",
        "managedIdentity: {}",
        f"managedIdentity: {{clientID: {GUID}}}",
    ],
)
def test_credential_kinds(credentials: str) -> None:
    parse_sections(
        key_manager(f'vaultURL: "https://v.vault.azure.net/"\ncredentials: {{{credentials}}}')
    )


def test_webhook_with_every_field() -> None:
    (section,) = parse_sections(
        "section: KeyManager\nschema: v1\nspec:\n  extensions:\n    webhook:\n"
        "      webhookURL: http://127.0.0.1:9999/keys/v1?tenant=a\n"
        "      caCertPath: /etc/ssl/keyservice-ca.pem\n      timeout: 1m\n"
    )
    assert key_manager_type(section.spec) == "webhook"


@pytest.mark.parametrize("scope", SCOPES)
def test_key_lifecycle_at_every_scope(scope: str) -> None:
    (section,) = parse_sections(
        "section: KeyLifecycle\nschema: v1\nspec: {x509CATTL: 1h30m, jwtKeyTTL: 365d}\n",
        scope=scope,
    )
    assert section.spec == {"x509CATTL": "1h30m", "jwtKeyTTL": "365d"}


def test_several_documents_in_upload_order_and_empty_ones_ignored() -> None:
    text = (
        "---\n---\nsection: KeyLifecycle\nschema: v1\nspec: {jwtKeyTTL: 5m}\n"
        "---\n" + VENDOR_SEED + "---\n...\n"
    )
    sections = parse_sections(text.encode(), scope="cluster")
    assert [s.name for s in sections] == ["KeyLifecycle", "KeyManager"]


def test_scope_none_skips_the_scope_check_and_unknown_scope_is_a_programming_error() -> None:
    parse_sections("section: KeyManager\nschema: v1\nspec: {}\n", scope=None)
    with pytest.raises(ValueError, match="unknown scope 'global'"):
        parse_sections(VENDOR_SEED, scope="global")


def test_section_types() -> None:
    types = section_types()
    assert set(types) == {"KeyManager", "KeyLifecycle"}
    assert types["KeyManager"].allowed_scopes == ("trust-domain-deployment", "cluster")
    assert types["KeyLifecycle"].allowed_scopes == SCOPES
    assert all(t.versions == ("v1",) and t.description for t in types.values())
    types.clear()  # a copy: ours stays intact
    assert section_types()


# -- issues: shape and completeness ----------------------------------------------------------


def test_issue_str_and_dict() -> None:
    issue = ValidationIssue("KeyManager", AKV + "/vaultURL", "must use https", 0)
    assert str(issue) == "KeyManager /spec/extensions/azureKeyVault/vaultURL: must use https"
    assert issue.to_dict() == {
        "section": "KeyManager",
        "pointer": AKV + "/vaultURL",
        "reason": "must use https",
        "document": 0,
    }
    assert (
        str(ValidationIssue("<document>", "", "empty upload", None)) == "<document>: empty upload"
    )


def test_every_issue_of_every_document_at_once() -> None:
    text = (
        key_manager(
            'vaultURL: "http://v.vault.azure.net/"\nkeyType: ec-p999\nkeyTags: {"spire-x": a}\nbogus: 1'
        )
        + "---\nsection: KeyLifecycle\nschema: v1\nspec: {x509CATTL: 0s, jwtKeyTTL: 1y}\n"
    )
    issues = issues_of(text)
    found = {(i.document, i.section, i.pointer) for i in issues}
    assert found == {
        (0, "KeyManager", AKV + "/vaultURL"),
        (0, "KeyManager", AKV + "/keyType"),
        (0, "KeyManager", AKV + "/keyTags/spire-x"),
        (0, "KeyManager", AKV + "/bogus"),
        (1, "KeyLifecycle", "/spec/x509CATTL"),
        (1, "KeyLifecycle", "/spec/jwtKeyTTL"),
    }


def test_unknown_field_lists_allowed_fields() -> None:
    (reason,) = reasons_at(
        issues_of(key_manager('vaultURL: "https://v.vault.azure.net/"\nfoo: 1')), AKV + "/foo"
    )
    assert (
        reason
        == "unknown field 'foo'; allowed: vaultURL, keyTags, keyType, sharedKeys, credentials"
    )


def test_pointer_escaping_rfc6901() -> None:
    issues = issues_of(
        key_manager('vaultURL: "https://v.vault.azure.net/"\nkeyTags: {"Spire-a/b~c": x}')
    )
    assert reasons_at(issues, AKV + "/keyTags/Spire-a~1b~0c")


def test_section_is_placed_on_issues_and_unknown_sections_get_a_placeholder() -> None:
    (issue,) = issues_of("section: [KeyManager]\nschema: v1\nspec: {}\n")
    assert (issue.section, issue.pointer) == ("<document>", "/section")
    assert "known sections: KeyLifecycle, KeyManager" in issue.reason


def test_scope_violation_and_spec_issues_reported_together() -> None:
    issues = issues_of(
        "section: KeyManager\nschema: v1\nspec: {extensions: {webhook: {}}}\n", scope="trust-domain"
    )
    assert reasons_at(issues, "/section") == [
        "KeyManager cannot be set at scope trust-domain; allowed scopes: "
        "trust-domain-deployment, cluster"
    ]
    assert reasons_at(issues, "/spec/extensions/webhook/webhookURL") == [
        "required field 'webhookURL' is missing"
    ]


def test_no_secret_is_echoed() -> None:
    secret = "Zq9~real-looking-secret-value"
    texts = [
        key_manager(f'vaultURL: "https://u:{secret}@v.vault.azure.net/"'),
        key_manager(
            f'vaultURL: "https://v.vault.azure.net/"\ncredentials: {{clientSecret: "{secret}"}}'
        ),
        key_manager(
            f'vaultURL: "https://v.vault.azure.net/"\ncredentials:\n  clientSecret:\n'
            f"    tenantID: {secret}\n    clientID: {GUID}\n    clientSecretFile: {secret}"
        ),
        "section: KeyManager\nschema: v1\nspec:\n  extensions:\n    webhook:\n"
        f"      webhookURL: https://admin:{secret}@keys.example.com/\n",
    ]
    for text in texts:
        with pytest.raises(DocumentValidationError) as caught:
            parse_sections(text)
        assert caught.value.issues
        assert secret not in str(caught.value)
        assert all(secret not in issue.reason for issue in caught.value.issues)


# -- individual rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://v.vault.azure.net/", "must use https (got scheme 'http')"),
        ("v.vault.azure.net", "must use https (got no scheme)"),
        ("https:///", "must have a host"),
        ("https://v.vault.azure.net/keys", "must not have a path"),
        ("https://v.vault.azure.net/?x=1", "must not have a query"),
        ("https://v.vault.azure.net/#top", "must not have a fragment"),
        ("https://user@v.vault.azure.net/", "must not contain user info"),
        ("https://v.vault.azure.net:99999/", "is not a valid URL"),
        ("https://v.vault.azure.net/ x", "must not contain spaces"),
    ],
)
def test_vault_url_rules(url: str, reason: str) -> None:
    issues = issues_of(key_manager(f'vaultURL: "{url}"'))
    assert any(reason in r for r in reasons_at(issues, AKV + "/vaultURL")), issues


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://k.example.com/", "must use http or https"),
        ("https://k.example.com/#x", "must not have a fragment"),
        ("http://a:b@k.example.com/", "must not contain user info"),
    ],
)
def test_webhook_url_rules(url: str, reason: str) -> None:
    text = f"section: KeyManager\nschema: v1\nspec:\n  extensions:\n    webhook: {{webhookURL: '{url}'}}\n"
    assert any(
        reason in r for r in reasons_at(issues_of(text), "/spec/extensions/webhook/webhookURL")
    )


def test_key_tag_limits() -> None:
    """Key Vault's limits (learn.microsoft.com "Azure Key Vault keys details", Key tags): names
    and values up to 256 characters."""
    long_name, long_value = "n" * 257, "v" * 257
    issues = issues_of(
        key_manager(
            f'vaultURL: "https://v.vault.azure.net/"\nkeyTags: {{"{long_name}": a, b: "{long_value}", '
            '"DEFAKTO-x": c, "": d}'
        )
    )
    assert reasons_at(issues, f"{AKV}/keyTags/{long_name}") == [
        "tag name is 257 characters; Key Vault allows 256"
    ]
    assert reasons_at(issues, f"{AKV}/keyTags/b") == [
        "tag value is 257 characters; Key Vault allows 256"
    ]
    assert "reserved prefix 'defakto-'" in reasons_at(issues, f"{AKV}/keyTags/DEFAKTO-x")[0]
    assert reasons_at(issues, f"{AKV}/keyTags/") == ["name must not be empty"]


def test_twelve_user_tags_is_the_maximum() -> None:
    tags = ", ".join(f"t{i}: v" for i in range(12))
    parse_sections(key_manager(f'vaultURL: "https://v.vault.azure.net/"\nkeyTags: {{{tags}}}'))


def test_client_secret_requires_every_field() -> None:
    issues = issues_of(
        key_manager('vaultURL: "https://v.vault.azure.net/"\ncredentials: {clientSecret: {}}')
    )
    base = AKV + "/credentials/clientSecret/"
    for field in ("tenantID", "clientID", "clientSecretFile"):
        assert reasons_at(issues, base + field) == [f"required field {field!r} is missing"]


def test_webhook_timeout_rules() -> None:
    def timeout_reasons(value: str) -> list[str]:
        text = (
            "section: KeyManager\nschema: v1\nspec:\n  extensions:\n    webhook:\n"
            f"      webhookURL: https://k.example.com/\n      timeout: {value}\n"
        )
        return reasons_at(issues_of(text), "/spec/extensions/webhook/timeout")

    assert timeout_reasons("61s") == ["must be at most 60s"]
    assert timeout_reasons("0s") == ["must be longer than zero"]
    assert timeout_reasons("5") == ["must be a string, got an integer"]
    assert "must be a duration" in timeout_reasons("soon")[0]


def test_lifecycle_bounds() -> None:
    def reasons(value: str) -> list[str]:
        text = f"section: KeyLifecycle\nschema: v1\nspec: {{jwtKeyTTL: {value}}}\n"
        return reasons_at(issues_of(text), "/spec/jwtKeyTTL")

    assert reasons("59s") == ["must be between 1m and 365d"]
    assert reasons("366d") == ["must be between 1m and 365d"]
    parse_sections("section: KeyLifecycle\nschema: v1\nspec: {jwtKeyTTL: 1m, x509CATTL: 8760h}\n")


# -- shared keys: template and regex ---------------------------------------------------------


def shared_keys(
    template: str, regex: str, trust_domain: str | None = None
) -> list[ValidationIssue]:
    text = key_manager(
        'vaultURL: "https://v.vault.azure.net/"\nsharedKeys:\n'
        f"  keyNameTemplate: '{template}'\n  keyIdExtractionRegex: '{regex}'"
    )
    try:
        parse_sections(text, trust_domain=trust_domain)
    except DocumentValidationError as exc:
        return exc.issues
    return []


DASHED = 'spire-{{ .TrustDomain | replace "." "-" }}-{{ .KeyID }}'
SPIRE_DOC_REGEX = "^spire-[^-]+-(.+)$"


def test_spire_doc_example_is_flagged_with_a_helpful_reason() -> None:
    issues = shared_keys(DASHED, SPIRE_DOC_REGEX, trust_domain="example.org")
    (reason,) = reasons_at(issues, AKV + "/sharedKeys/keyIdExtractionRegex")
    assert "captures 'org-jwt-signer-a', not the key id 'jwt-signer-a'" in reason
    assert "trust domain 'example.org'" in reason
    assert "sha256sum | trunc 8" in reason  # says how to fix it
    assert not reasons_at(issues, AKV + "/sharedKeys/keyNameTemplate")


def test_spire_doc_example_name_from_the_doc() -> None:
    # The doc claims ^spire-[^-]+-(.+)$ extracts 'jwt-signer' from this name: it does not.
    reason = check_key_id_regex(SPIRE_DOC_REGEX, [("spire-example-com-jwt-signer", "jwt-signer")])
    assert reason is not None
    assert "captures 'com-jwt-signer', not the key id 'jwt-signer'" in reason


@pytest.mark.parametrize(
    ("template", "regex", "trust_domain"),
    [
        (
            "spire-{{ .TrustDomain | sha256sum | trunc 8 }}-{{ .KeyID }}",
            "^spire-[0-9a-f]{8}-(.+)$",
            "acme.com",
        ),
        (DASHED, "^spire-example-org-(.+)$", "example.org"),
        (DASHED, "^spire-prod-acme-com-(.+)$", "prod.acme.com"),
        # SPIRE's doc regex is right for a one-label trust domain.
        (DASHED, SPIRE_DOC_REGEX, "acme"),
        # A raw trust domain gives a valid key name when it has no dot.
        ("spire-{{ .TrustDomain }}-{{ .KeyID }}", "^spire-acme-(.+)$", "acme"),
    ],
)
def test_working_shared_keys(template: str, regex: str, trust_domain: str) -> None:
    assert shared_keys(template, regex, trust_domain) == []
    assert shared_keys(template, regex) == []  # without the trust domain: deferred, not refused


@pytest.mark.parametrize(
    ("template", "regex", "trust_domain", "pointer", "reason"),
    [
        # The issue's case: example.org's regex next to another trust domain never matches.
        (
            DASHED,
            "^spire-example-org-(.+)$",
            "acme.com",
            "keyIdExtractionRegex",
            "does not match 'spire-acme-com-jwt-signer-a'",
        ),
        (DASHED, SPIRE_DOC_REGEX, "prod.acme.com", "keyIdExtractionRegex", "captures 'acme-com-"),
        (
            "spire-{{ .TrustDomain }}-{{ .KeyID }}",
            "^spire-acme.com-(.+)$",
            "acme.com",
            "keyNameTemplate",
            "renders 'spire-acme.com-jwt-signer-a' for trust domain 'acme.com'",
        ),
    ],
)
def test_the_scopes_trust_domain_decides(
    template: str, regex: str, trust_domain: str, pointer: str, reason: str
) -> None:
    found = reasons_at(shared_keys(template, regex, trust_domain), f"{AKV}/sharedKeys/{pointer}")
    assert any(reason in r for r in found), found
    assert shared_keys(template, regex) == []  # deferred until the trust domain is known


def test_trust_domain_independent_checks_run_without_it() -> None:
    # No {{ .KeyID }}, a regex with two groups: wrong for every trust domain, refused at once.
    issues = shared_keys('spire-{{ .TrustDomain | replace "." "-" }}', "^(a)(b)$")
    assert "include {{ .KeyID }}" in reasons_at(issues, AKV + "/sharedKeys/keyNameTemplate")[0]
    assert "it has 2" in reasons_at(issues, AKV + "/sharedKeys/keyIdExtractionRegex")[0]


@pytest.mark.parametrize(
    ("template", "regex", "pointer", "reason"),
    [
        (
            "spire-{{ .KeyID | upper }}",
            "^spire-(.+)$",
            "keyIdExtractionRegex",
            "captures 'JWT-SIGNER-A'",
        ),
        (
            "spire-{{ .KeyID }}",
            "^other-(.+)$",
            "keyIdExtractionRegex",
            "does not match 'spire-jwt-signer-a'",
        ),
        (
            "spire-{{ .KeyID }}",
            "^spire-(?:.+)$",
            "keyIdExtractionRegex",
            "exactly one capture group, it has 0",
        ),
        ("spire-{{ .KeyID }}", "^spire-(x)?.*$", "keyIdExtractionRegex", "captures nothing"),
        ("spire-{{ .KeyID }}", "[", "keyIdExtractionRegex", "does not compile"),
        ("spire_{{ .KeyID }}", "^spire_(.+)$", "keyNameTemplate", "not a valid Key Vault key name"),
        ("spire-{{ .ServerID }}", "^spire-(.+)$", "keyNameTemplate", "include {{ .KeyID }}"),
        ("spire-{{ .KeyId }}", "^spire-(.+)$", "keyNameTemplate", "unknown field .KeyId"),
        ("{{ .KeyID | repeat 3 }}", "^(.+)$", "keyNameTemplate", "unknown function 'repeat'"),
        (
            "x{{ .KeyID }}" + "y" * 127,
            "^x(.+)y+$",
            "keyNameTemplate",
            "not a valid Key Vault key name",
        ),
    ],
)
def test_shared_keys_rules(template: str, regex: str, pointer: str, reason: str) -> None:
    issues = shared_keys(template, regex)
    found = reasons_at(issues, f"{AKV}/sharedKeys/{pointer}")
    assert any(reason in r for r in found), [str(i) for i in issues]


def test_broken_template_still_checks_the_regex_alone() -> None:
    issues = shared_keys("{{ .Nope }}", "^(a)(b)$")
    assert reasons_at(issues, AKV + "/sharedKeys/keyNameTemplate")
    assert "it has 2" in reasons_at(issues, AKV + "/sharedKeys/keyIdExtractionRegex")[0]
