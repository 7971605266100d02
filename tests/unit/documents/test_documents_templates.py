"""Key name templates, Key Vault key names and durations."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from controlplane.documents import (
    TemplateError,
    format_duration,
    is_valid_key_vault_key_name,
    parse_duration,
    render_key_name_template,
    sanitize_key_vault_name,
)

SPIRE_DOC_TEMPLATE = 'spire-{{ .TrustDomain | replace "." "-" }}-{{ .KeyID }}'


def render(
    template: str, td: str = "example.org", sid: str = "srv-1", kid: str = "jwt-signer"
) -> str:
    return render_key_name_template(template, trust_domain=td, server_id=sid, key_id=kid)


def test_spire_doc_template() -> None:
    assert render(SPIRE_DOC_TEMPLATE, td="example.com") == "spire-example-com-jwt-signer"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain-text", "plain-text"),
        ("{{ .TrustDomain }}/{{ .ServerID }}/{{ .KeyID }}", "example.org/srv-1/jwt-signer"),
        ('{{ replace "." "-" .TrustDomain }}', "example-org"),
        ("{{ .KeyID | upper }}", "JWT-SIGNER"),
        ('{{ "ABC" | lower }}', "abc"),
        ("{{ .KeyID | trunc 3 }}", "jwt"),
        ("{{ .KeyID | trunc -6 }}", "signer"),
        ("{{ .KeyID | trunc -99 }}", "jwt-signer"),
        ('{{ .TrustDomain | trimSuffix ".org" }}', "example"),
        ('{{ .TrustDomain | trimPrefix "exa" }}', "mple.org"),
        ("{{ .TrustDomain | sha256sum }}", hashlib.sha256(b"example.org").hexdigest()),
        (
            "{{ .TrustDomain | sha256sum | trunc 8 }}",
            hashlib.sha256(b"example.org").hexdigest()[:8],
        ),
        ('{{ .ServerID | default "none" }}', "srv-1"),
        ("{{ `raw\\n` }}", "raw\\n"),
        ('{{ "a\\"b\\\\c" }}', 'a"b\\c'),
        ("{{ 42 }}", "42"),
        ("a {{- .KeyID -}} b", "ajwt-signerb"),
        ("a {{-3}} b", "a -3 b"),
        ("text }} stays", "text }} stays"),
        ('{{.TrustDomain|replace "." "-"|upper}}', "EXAMPLE-ORG"),
    ],
)
def test_render(template: str, expected: str) -> None:
    assert render(template) == expected


def test_default_applies_to_empty_values() -> None:
    assert render('{{ .ServerID | default "none" }}', sid="") == "none"


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ .Foo }}", "unknown field .Foo; available: .TrustDomain, .ServerID, .KeyID"),
        ("{{ . }}", "'.' alone is not supported"),
        ("{{ nope .KeyID }}", "unknown function 'nope'; available: replace, lower"),
        ('{{ replace "." .KeyID }}', "replace takes 3 argument(s)"),
        ('{{ .KeyID | replace "." }}', "so write 2 after 'replace'"),
        ('{{ .KeyID | trunc "3" }}', "trunc wants an integer here, got a string"),
        ("{{ .KeyID | .TrustDomain }}", "cannot pipe into a value"),
        ("{{ .KeyID .TrustDomain }}", "only a function can take arguments"),
        ("{{ lower upper .KeyID }}", "use a pipeline instead"),
        ("{{ .KeyID | }}", "missing command around '|'"),
        ("{{ }}", "empty action"),
        ("{{ .KeyID", "'{{' without a matching '}}'"),
        ('{{ "open }}', "unterminated string"),
        ('{{ "\\q" }}', "unsupported escape"),
        ("{{ (lower .KeyID) }}", "unexpected character '('"),
        ("{{ 12345678 }}", "number too large"),
        ("x" * 1025, "longer than 1024 characters"),
        (
            '{{ .KeyID | replace "" "xxxxxxxxxx" | replace "" "xxxxxxxxxx" | replace "" "xxxxxxxxxx" }}',
            "grows beyond",
        ),
    ],
)
def test_template_errors(template: str, reason: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render(template)
    assert reason in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_template_error_says_where() -> None:
    with pytest.raises(TemplateError, match=r"at character 10 of the template"):
        render("spire-{{ .Bad }}")


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("a", True),
        ("spire-example-org-jwt-signer", True),
        ("A-9", True),
        ("x" * 127, True),
        ("x" * 128, False),
        ("", False),
        ("has_underscore", False),
        ("has.dot", False),
        ("trailing-newline\n", False),
        ("ünïcode", False),
    ],
)
def test_key_vault_key_names(name: str, valid: bool) -> None:
    assert is_valid_key_vault_key_name(name) is valid


def test_sanitize_key_vault_name() -> None:
    assert sanitize_key_vault_name("spire/example.org:x509_CA") == "spire-example-org-x509-CA"
    assert sanitize_key_vault_name("é" * 200) == "-" * 127
    assert is_valid_key_vault_key_name(sanitize_key_vault_name("a b\tc\n" * 40))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("24h", 86_400),
        ("1h30m", 5_400),
        ("7d", 604_800),
        ("1d2h3m4s", 93_784),
        ("0h1s", 1),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "must be a duration"),
        ("0s", "longer than zero"),
        ("0h0m", "longer than zero"),
        ("-5m", "must be a duration"),
        ("5", "must be a duration"),
        ("1.5h", "must be a duration"),
        ("1w", "must be a duration"),
        ("30m1h", "largest first"),
        ("1h1h", "each unit once"),
        ("5 m", "must be a duration"),
        ("1" * 41 + "s", "must be a duration"),
    ],
)
def test_parse_duration_errors(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_duration(text)


def test_format_duration_round_trip() -> None:
    for text in ("90s", "1m30s", "1h30m", "7d", "1d2h3m4s"):
        assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)
    assert format_duration(timedelta(seconds=90)) == "1m30s"
    with pytest.raises(ValueError):
        format_duration(timedelta(0))
