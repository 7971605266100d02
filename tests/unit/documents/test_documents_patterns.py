"""User regexes: RE2 with Go's `regexp` syntax and semantics (SPIRE's plugin is Go), linear time.

Go's behaviour is from its sources (`regexp/syntax/parse.go`: repeat counts over 1000 are
"invalid repeat count", `\\C` is refused, `$` matches at the end of text only without `(?m)`)
and `regexp` (leftmost-first submatches).
"""

from __future__ import annotations

import pytest

from controlplane.documents.patterns import MAX_PATTERN_CHARS, PatternError, compile_pattern
from controlplane.documents.tags import control_character, reserved_prefix_problem, skeleton


@pytest.mark.parametrize(
    ("pattern", "groups"),
    [
        ("^spire-[0-9a-f]{8}-(.+)$", 1),
        ("^spire-(?P<id>.+)$", 1),  # Go's named group
        ("^spire-(?<id>.+)$", 1),  # Go 1.22's named group
        ("(?i)^SPIRE-(?:x|y)-(.+)$", 1),
        (r"^\Qa{9999}\E(.+)$", 1),  # quoted text: not a repetition
        (r"^x\{99999}-[{99999}](.+)$", 1),  # escaped brace, brace in a class
        (r"^\x{1F600}{2}\p{Greek}{3}(.+)$", 1),  # braces of escapes, then small counts
        ("^a{1000}(.*)$", 1),  # Go's maximum
        ("^a{,99999}(.*)$", 1),  # no lower bound: Go reads the brace as a literal
        ("^(?:a+)+b(.*)$", 1),  # catastrophic for a backtracking engine, linear here
    ],
)
def test_go_accepts_these(pattern: str, groups: int) -> None:
    assert compile_pattern(pattern).groups == groups


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("a{4294967295}", "counts may be at most 1000"),  # RE2 C++ alone would read it as text
        ("^(.{1001})$", "counts may be at most 1000"),
        ("^(.{2,1001})$", "counts may be at most 1000"),
        ("^(.{100000000,})$", "counts may be at most 1000"),
        (r"^spire-\C(.+)$", r"\C"),
        ("^spire-(?=jwt)(.+)$", "does not compile as an RE2/Go regular expression"),
        (r"^(a)\1$", "does not compile"),  # back-references
        (r"^spire-(.+)\Z", "does not compile"),  # Go has \z, not \Z
        ("^spire-(.+$", "does not compile"),
        ("((a{1000}){1000})", "does not compile"),  # nested counts multiply past 1000
        (r"\pL{1000}", "is too large"),
        ("a" * (MAX_PATTERN_CHARS + 1), f"longer than {MAX_PATTERN_CHARS}"),
        ("\ud800", "lone surrogate"),
    ],
)
def test_refused_with_a_reason(pattern: str, reason: str) -> None:
    with pytest.raises(PatternError) as refused:
        compile_pattern(pattern)
    assert reason in str(refused.value)


def test_matching_follows_go() -> None:
    # Leftmost-first, as Go's FindStringSubmatch (POSIX leftmost-longest would give "ab").
    found = compile_pattern("(a|ab)(c|bcd)(d*)").search("abcd")
    assert found is not None and found.groups == ("a", "bcd", "")
    # $ is the end of the text: unlike Python's re, no match before a trailing newline.
    assert compile_pattern("^spire-(.+)$").search("spire-a\n") is None
    assert compile_pattern("^spire-(.+)$").search("spire-a").group(1) == "a"  # type: ignore[union-attr]
    # A group that did not take part is None, not "".
    found = compile_pattern("^(x)?spire").search("spire")
    assert found is not None and found.group(1) is None
    assert compile_pattern("(a)").search("\ud800") is None


def test_a_pattern_that_hangs_a_backtracking_engine_answers_at_once() -> None:
    # Python's re needs minutes for 28 characters of this; RE2 is linear in the text.
    assert compile_pattern("^(?:a+)+b(.*)$").search("a" * 100_000) is None


@pytest.mark.parametrize(
    "name",
    [
        "\u0430zure:owner",  # Cyrillic а
        "azure\uff1aowner",  # fullwidth colon
        "spi\u200bre-server-td",  # zero-width space
        "SP\u0130RE-server-id",  # capital I with dot: case folds to i + combining dot
        " spire-key-id",  # leading space
        "\u2060defakto-x",  # word joiner (format character)
        "sp\u00edre-x",  # accent
        "\u0455pire-x",  # Cyrillic dze
        "AZURE\u02d0x",  # modifier letter triangular colon
    ],
)
def test_look_alike_reserved_prefixes_are_named_as_such(name: str) -> None:
    reason = reserved_prefix_problem(name)
    assert reason is not None and "looks like the reserved prefix" in reason


@pytest.mark.parametrize("name", ["azure:x", "Azure:x", "SPIRE-server-td", "defakto-x"])
def test_reserved_prefixes_any_case(name: str) -> None:
    reason = reserved_prefix_problem(name)
    assert reason is not None and "starts with the reserved prefix" in reason


@pytest.mark.parametrize("name", ["team", "azure", "spire", "my-azure:x", "\u00e9quipe", "\u961f"])
def test_ordinary_names_pass(name: str) -> None:
    assert reserved_prefix_problem(name) is None


def test_skeleton_and_control_characters() -> None:
    assert skeleton("\uff33\u0420\u0456re\u2010") == "spire-"
    assert control_character("a\nb") == "U+000A at offset 1"
    assert control_character("a\u2028") == "U+2028 at offset 1"
    assert control_character("\x7f") == "U+007F at offset 0"
    assert control_character("caf\u00e9 \u961f") is None
