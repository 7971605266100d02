"""User-supplied regular expressions: compiled and matched with RE2, as Go's `regexp` does.

SPIRE's Azure Key Vault plugin (Go) runs `keyIdExtractionRegex` with Go's `regexp`, which is
RE2: linear time in the text, no backtracking, no look-around or back-references. Python's
`re` backtracks: `^(?:a+)+b(.*)$` against 40 characters does not finish, and it holds the GIL
while it tries, freezing every other request of the process. So every pattern a user gives us
goes through this module, never through `re`.

RE2 with its default options (not POSIX, leftmost-first, UTF-8, `$` at end of text only) has
the syntax and semantics of Go's `regexp.Compile` (syntax.Perl). Two places where the C++
library is more lenient than Go are checked here, so a pattern this module accepts is one SPIRE
accepts: Go refuses a repeat count over 1000 (`a{4294967295}`: RE2 C++ would read the braces as
literal text), and Go refuses `\\C`. Cost: compiling is linear in the pattern (at most
MAX_PATTERN_CHARS) within a memory budget of MAX_PROGRAM_BYTES; matching is linear in the text
and releases the GIL.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

__all__ = ["MAX_PATTERN_CHARS", "MAX_PROGRAM_BYTES", "Pattern", "PatternError", "compile_pattern"]

MAX_PATTERN_CHARS = 1024  # the schemas' maxLength for keyIdExtractionRegex
MAX_PROGRAM_BYTES = 8 << 20  # RE2's own default budget, stated here so it cannot drift
MAX_REPEAT = 1000  # Go's regexp/syntax limit on {n,m}


class PatternError(ValueError):
    """A pattern refused, with a reason that can follow 'keyIdExtractionRegex ...'."""


@dataclass(frozen=True)
class Match:
    """A successful search: the text each capture group matched (None: the group did not take part)."""

    groups: tuple[str | None, ...]

    def group(self, index: int) -> str | None:
        return self.groups[index - 1]


@dataclass(frozen=True)
class Pattern:
    """A compiled pattern. `search` finds the leftmost match anywhere, like Go's FindStringSubmatch."""

    source: str
    groups: int
    _compiled: Any

    def search(self, text: str) -> Match | None:
        try:
            found = self._compiled.search(text)
        except UnicodeEncodeError:
            return None  # a lone surrogate cannot be a key name: Go strings are UTF-8
        if found is None:
            return None
        return Match(tuple(found.groups()))


@cache
def _re2() -> tuple[Any, Any]:
    """The re2 module and our options, loaded on first use (the package must import fast)."""
    import re2

    options = re2.Options()
    options.max_mem = MAX_PROGRAM_BYTES
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    return re2, options


def compile_pattern(source: str) -> Pattern:
    """Compile `source` with Go's syntax; raises PatternError saying why it is refused."""
    if not isinstance(source, str):
        raise PatternError(f"must be a string, got {type(source).__name__}")
    if len(source) > MAX_PATTERN_CHARS:
        raise PatternError(f"is longer than {MAX_PATTERN_CHARS} characters")
    _check_go_only_rules(source)
    re2, options = _re2()
    try:
        compiled = re2.compile(source, options)
    except UnicodeEncodeError:
        raise PatternError("is not valid Unicode text (it holds a lone surrogate)") from None
    except re2.error as exc:
        raise PatternError(_reason(exc)) from None
    return Pattern(source, int(compiled.groups), compiled)


def _reason(exc: Exception) -> str:
    message = exc.args[0] if exc.args else str(exc)
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    if "pattern too large" in text:
        return (
            f"is too large: its compiled program is over the {MAX_PROGRAM_BYTES >> 20} MiB "
            "budget that keeps matching linear and bounded"
        )
    return f"does not compile as an RE2/Go regular expression: {text[:200]}"


def _check_go_only_rules(source: str) -> None:
    """Refuse what Go's parser refuses but RE2 C++ accepts: repeat counts over 1000 and \\C.

    A scan of the pattern's top-level syntax: escapes (\\x{...}, \\p{...}, \\Q...\\E) and
    character classes are skipped, since braces there are not repetitions.
    """
    i, n = 0, len(source)
    while i < n:
        char = source[i]
        if char == "\\":
            i = _skip_escape(source, i)
        elif char == "[":
            i = _skip_class(source, i)
        elif char == "{":
            counts = _repeat_counts(source, i)
            if counts is not None and any(c < 0 or c > MAX_REPEAT for c in counts):
                end = source.index("}", i) + 1
                raise PatternError(
                    f"has the repeat count {source[i:end][:40]!r}; counts may be at most "
                    f"{MAX_REPEAT} (as in Go's regexp, which SPIRE uses)"
                )
            i += 1
        else:
            i += 1


def _skip_escape(source: str, i: int) -> int:
    """Index after the escape sequence starting at source[i] == '\\'."""
    nxt = source[i + 1 : i + 2]
    if nxt == "C":
        raise PatternError("uses \\C (any byte), which Go's regexp does not support")
    if nxt == "Q":
        end = source.find("\\E", i + 2)
        return len(source) if end < 0 else end + 2
    if nxt in ("x", "p", "P") and source[i + 2 : i + 3] == "{":
        close = source.find("}", i + 3)
        return len(source) if close < 0 else close + 1
    return i + 2


def _skip_class(source: str, i: int) -> int:
    """Index after the character class starting at source[i] == '['."""
    j = i + 1
    if source[j : j + 1] == "^":
        j += 1
    if source[j : j + 1] == "]":  # a leading ] is a literal
        j += 1
    while j < len(source):
        if source.startswith("[:", j):
            close = source.find(":]", j + 2)
            if close >= 0:
                j = close + 2
                continue
        if source[j] == "\\":
            j = _skip_escape(source, j)
            continue
        if source[j] == "]":
            return j + 1
        j += 1
    return j


def _repeat_counts(source: str, i: int) -> tuple[int, ...] | None:
    """The numbers of a Go repeat {n}, {n,} or {n,m} at source[i]; None if the brace is literal.

    Like Go's parseInt: digits without a leading zero; a value of 10^8 or more counts as -1
    (too big), which Go then refuses.
    """
    close = source.find("}", i)
    if close < 0:
        return None
    inner = source[i + 1 : close]
    low, comma, high = inner.partition(",")
    parts = [low] + ([high] if comma and high else [])
    if not all(_go_int(p) for p in parts):
        return None
    return tuple(int(p) if len(p) <= 8 else -1 for p in parts)


def _go_int(text: str) -> bool:
    return text.isascii() and text.isdigit() and not (len(text) > 1 and text[0] == "0")
