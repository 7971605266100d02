"""Hostile and malformed input: limits, encodings, tags, aliases; both YAML parsers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from controlplane.documents import (
    DEFAULT_LIMITS,
    DocumentValidationError,
    InputRejectedError,
    Limits,
    parse_sections,
    safe_yaml,
)

from corpus.bad_corpus import BadCase, load_cases

VALID = 'section: KeyManager\nschema: v1\nspec:\n  extensions:\n    webhook: {webhookURL: "https://k.example.com/"}\n'


@pytest.fixture
def pure_python_parser(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run through PyYAML's own parser, as on a machine without libyaml."""
    monkeypatch.setattr(safe_yaml, "_USE_LIBYAML", False)
    yield


def rejected(data: str | bytes, limits: Limits = DEFAULT_LIMITS) -> InputRejectedError:
    with pytest.raises(InputRejectedError) as caught:
        parse_sections(data, limits=limits)
    return caught.value


def test_libyaml_is_used_here() -> None:
    # The fast path must be the one the tests mostly exercise; fail loudly if it is missing.
    assert safe_yaml._USE_LIBYAML


@pytest.mark.parametrize("case", [c for c in load_cases() if c.kind == "input_rejected"], ids=str)
def test_corpus_rejections_with_the_pure_python_parser(
    case: BadCase, pure_python_parser: None
) -> None:
    # Every refusal is worded by us, so both parsers give the same reason.
    error = rejected(case.data)
    assert case.reason in error.reason
    assert error.too_large is case.too_large


def test_valid_document_with_the_pure_python_parser(pure_python_parser: None) -> None:
    assert [s.name for s in parse_sections(VALID)] == ["KeyManager"]


def test_str_and_bytes_give_the_same_result() -> None:
    assert parse_sections(VALID) == parse_sections(VALID.encode())


def test_utf8_bom_is_accepted() -> None:
    assert parse_sections(b"\xef\xbb\xbf" + VALID.encode())


def test_non_utf8_names_the_byte_offset() -> None:
    assert (
        rejected(b"section: \xff\n").reason
        == "input is not UTF-8: invalid byte 0xff at byte offset 9"
    )
    assert "byte offset 0" in rejected("ünï".encode("utf-16")).reason


def test_lone_surrogate_in_str_is_rejected() -> None:
    assert "offset 9" in rejected("section: \udcff\n").reason


def test_document_size_is_counted_in_bytes() -> None:
    # 60k two-byte characters: under the limit in characters, over it in bytes.
    text = VALID + f"# {'é' * 60_000}\n"
    limits = Limits(max_document_bytes=100_000)
    error = rejected(text, limits)
    assert error.too_large and "document 0 is larger than 100000 bytes" in error.reason
    assert parse_sections(text, limits=Limits(max_document_bytes=130_000))


def test_upload_size_limit_for_str_input() -> None:
    error = rejected("#" * 2_000, Limits(max_upload_bytes=1_000))
    assert error.too_large
    # 600 characters but 1,200 bytes
    assert rejected("#" + "é" * 600, Limits(max_upload_bytes=1_000)).too_large


def test_alias_counts_toward_depth() -> None:
    deep = "{a: " * 20 + "x" + "}" * 20
    inner = "[" * 15 + "*d" + "]" * 15
    text = f"anchor: &d {deep}\nuse: {inner}\n"
    assert "deeper than 32 levels" in rejected(text).reason
    shallow = f"anchor: &d {deep}\nuse: [*d]\n"
    # shallow enough: passes the parser, then fails validation as an unknown document
    with pytest.raises(DocumentValidationError):
        parse_sections(shallow)


def test_alias_counts_toward_nodes_without_expanding() -> None:
    # 10 levels of 10 aliases each would be 10^10 nodes: refused from the counts alone.
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)]
    assert "YAML nodes" in rejected("\n".join(lines)).reason


def test_limits_are_configurable() -> None:
    two = VALID + "---\nsection: KeyLifecycle\nschema: v1\nspec: {jwtKeyTTL: 1h}\n"
    assert len(parse_sections(two)) == 2
    assert "more than 1 documents" in rejected(two, Limits(max_documents=1)).reason
    assert "deeper than 3 levels" in rejected(VALID, Limits(max_depth=3)).reason
    assert "more than 5 YAML nodes" in rejected(VALID, Limits(max_nodes=5)).reason
    assert "more than 0 aliases" in rejected("a: &x 1\nb: *x\n", Limits(max_aliases=0)).reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a: !!str 1\nb: !!int '2'\n", None),  # core tags are fine
        ("a: !!timestamp 2024-01-01\n", "YAML tag !!timestamp"),
        ("a: !!omap [{x: 1}]\n", "YAML tag !!omap"),
        ("a: !!int nope\n", "cannot be read as int"),
        ("a: !!map [1]\n", "YAML tag !!map"),
        ("a: !<tag:example.com,2024:x> 1\n", "tag:example.com,2024:x"),
        ("? a\n", None),  # key with empty value: parses, fails validation
        ("~: a\n", "mapping key None"),
        ("1.5: a\n", "mapping key 1.5"),
        ("k: &a k\n*a : w\n", "duplicate key 'k' at line 2 (first at line 1)"),
        ("k: &a [1]\n? *a\n: w\n", "keys must be strings"),
    ],
)
def test_yaml_shapes(text: str, reason: str | None) -> None:
    if reason is None:
        with pytest.raises(DocumentValidationError):
            parse_sections(text)
    else:
        assert reason in rejected(text).reason


def test_importing_the_package_does_not_import_jsonschema() -> None:
    # The Terraform provider imports this package on every plan: keep it light.
    code = (
        "import sys, controlplane.documents as d\n"
        "assert 'jsonschema' not in sys.modules, 'jsonschema imported eagerly'\n"
        "d.parse_sections('section: KeyLifecycle\\nschema: v1\\nspec: {jwtKeyTTL: 1h}\\n')\n"
        "assert 'jsonschema' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("text", ["Zq9~pasted-secret\n", "a: !!int Zq9~pasted-secret\n"])
def test_rejections_do_not_echo_values(text: str) -> None:
    assert "Zq9" not in rejected(text).reason


def test_empty_documents_are_bounded_too() -> None:
    assert parse_sections("---\n" * 30 + VALID)  # 31 documents, 1 of them not empty
    assert "more than 40 documents counting empty ones" in rejected("---\n" * 250_000).reason


DENSE_FLOW = {
    "sequences": "[" * 100_000 + "]" * 100_000,
    "mappings": "{" * 5_000,
    "mixed": "[{" * 2_500,
    "after a key": "spec: " + "[" * 3_000,
    "on a later line": VALID + "other:\n  - " + "[" * 5_000,
}


@pytest.mark.parametrize("parser", ["libyaml", "pure-python"])
@pytest.mark.parametrize("shape", DENSE_FLOW, ids=str)
def test_dense_flow_nesting_is_refused_by_our_limit_before_any_parser(
    shape: str, parser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Newer libyaml releases stop at 1,000 flow levels with their own error while reading ahead
    # for a key; our limit must fire first with our message, whatever the PyYAML version.
    monkeypatch.setattr(safe_yaml, "_USE_LIBYAML", parser == "libyaml")
    reason = rejected(DENSE_FLOW[shape]).reason
    assert "deeper than 32 levels" in reason
    assert reason.startswith("upload nests flow collections")


def test_many_shallow_flow_collections_are_fine() -> None:
    # 3,000 brackets, never more than 2 deep: the pre-check counts depth, not brackets.
    text = VALID + "other: [" + "[1], " * 3_000 + "]\n"
    with pytest.raises(DocumentValidationError):  # parses; fails only as an unknown field
        parse_sections(text)


@pytest.mark.parametrize("parser", ["libyaml", "pure-python"])
@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x7f", "\ufffe"])
def test_control_characters_are_refused_in_our_words(
    char: str, parser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(safe_yaml, "_USE_LIBYAML", parser == "libyaml")
    reason = rejected(f"section: KeyManager\nschema: v{char}1\n").reason
    assert reason.startswith(f"character U+{ord(char):04X} at line 2, column 10")
