"""Key name templates: a small, safe subset of Go templates with Sprig-style functions.

SPIRE's shared-keys mode names Key Vault keys with a Go template such as
`spire-{{ .TrustDomain | replace "." "-" }}-{{ .KeyID }}`. We support exactly what a key
name needs, evaluated without any code execution:

- fields `.TrustDomain`, `.ServerID`, `.KeyID`;
- string literals ("..." with \\ \" \n \t \r escapes, or `raw`) and integer literals;
- pipelines `a | f x | g`: as in Go, the piped value is the *last* argument;
- functions replace OLD NEW S, lower S, upper S, trunc N S, trimSuffix SUF S,
  trimPrefix PRE S, sha256sum S (hex digest), default DEFAULT S;
- `{{-` / `-}}` trim the whitespace next to an action.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "FIELDS",
    "FUNCTIONS",
    "TemplateError",
    "parse_key_name_template",
    "render_key_name_template",
]

FIELDS = ("TrustDomain", "ServerID", "KeyID")
MAX_TEMPLATE_LENGTH = 1024
# Guards against templates that grow a string exponentially (replace "" "xxxxx" | ...).
MAX_VALUE_LENGTH = 4096


class TemplateError(ValueError):
    """The template cannot be parsed or rendered; the message says why and where."""


def _trunc(count: int, text: str) -> str:
    # Sprig semantics: a negative count keeps the last characters.
    if count < 0:
        return text[len(text) + count :] if len(text) + count > 0 else text
    return text[:count]


@dataclass(frozen=True)
class _Function:
    params: tuple[type, ...]  # types of all arguments, the piped one last
    call: Callable[..., str]


FUNCTIONS: dict[str, _Function] = {
    "replace": _Function((str, str, str), lambda old, new, s: s.replace(old, new)),
    "lower": _Function((str,), lambda s: s.lower()),
    "upper": _Function((str,), lambda s: s.upper()),
    "trunc": _Function((int, str), _trunc),
    "trimSuffix": _Function((str, str), lambda suffix, s: s.removesuffix(suffix)),
    "trimPrefix": _Function((str, str), lambda prefix, s: s.removeprefix(prefix)),
    "sha256sum": _Function((str,), lambda s: hashlib.sha256(s.encode("utf-8")).hexdigest()),
    "default": _Function((str, str), lambda fallback, s: s if s else fallback),
}

_TYPE_NAMES = {str: "a string", int: "an integer"}


@dataclass(frozen=True)
class _Operand:
    kind: str  # "field" | "literal"
    value: str | int  # field name or literal value
    column: int


@dataclass(frozen=True)
class _Command:
    function: str | None  # None: a single operand used as a value
    args: tuple[_Operand, ...]
    column: int


@dataclass(frozen=True)
class _Template:
    parts: tuple[str | tuple[_Command, ...], ...]


def _error(reason: str, column: int) -> TemplateError:
    return TemplateError(f"{reason} (at character {column + 1} of the template)")


def _tokens(source: str, start: int, end: int) -> list[tuple[str, str | int, int]]:
    """Split the inside of one action into (kind, value, column) tokens."""
    out: list[tuple[str, str | int, int]] = []
    pos = start
    while pos < end:
        char = source[pos]
        if char.isspace():
            pos += 1
        elif char == "|":
            out.append(("pipe", "|", pos))
            pos += 1
        elif char == ".":
            stop = pos + 1
            while stop < end and (source[stop].isalnum() or source[stop] == "_"):
                stop += 1
            name = source[pos + 1 : stop]
            if not name:
                raise _error(
                    "'.' alone is not supported; use one of " + ", ".join("." + f for f in FIELDS),
                    pos,
                )
            if name not in FIELDS:
                raise _error(
                    f"unknown field .{name}; available: " + ", ".join("." + f for f in FIELDS),
                    pos,
                )
            out.append(("field", name, pos))
            pos = stop
        elif char == '"':
            value, pos_after = _string(source, pos, end)
            out.append(("literal", value, pos))
            pos = pos_after
        elif char == "`":
            stop = source.find("`", pos + 1, end)
            if stop < 0:
                raise _error("unterminated raw string", pos)
            out.append(("literal", source[pos + 1 : stop], pos))
            pos = stop + 1
        elif char.isdigit() or (char == "-" and pos + 1 < end and source[pos + 1].isdigit()):
            stop = pos + 1
            while stop < end and source[stop].isdigit():
                stop += 1
            if stop - pos > 6:
                raise _error("number too large", pos)
            out.append(("literal", int(source[pos:stop]), pos))
            pos = stop
        elif char.isalpha() or char == "_":
            stop = pos + 1
            while stop < end and (source[stop].isalnum() or source[stop] == "_"):
                stop += 1
            name = source[pos:stop]
            if name not in FUNCTIONS:
                raise _error(f"unknown function {name!r}; available: " + ", ".join(FUNCTIONS), pos)
            out.append(("function", name, pos))
            pos = stop
        else:
            raise _error(f"unexpected character {char!r} in action", pos)
    return out


_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


def _string(source: str, pos: int, end: int) -> tuple[str, int]:
    out: list[str] = []
    index = pos + 1
    while index < end:
        char = source[index]
        if char == '"':
            return "".join(out), index + 1
        if char == "\\":
            if index + 1 >= end or source[index + 1] not in _ESCAPES:
                raise _error('unsupported escape in string; use \\\\, \\", \\n, \\t or \\r', index)
            out.append(_ESCAPES[source[index + 1]])
            index += 2
            continue
        out.append(char)
        index += 1
    raise _error("unterminated string", pos)


def _pipeline(source: str, start: int, end: int) -> tuple[_Command, ...]:
    tokens = _tokens(source, start, end)
    if not tokens:
        raise _error("empty action {{ }}", start)
    commands: list[_Command] = []
    group: list[tuple[str, str | int, int]] = []
    for token in [*tokens, ("pipe", "|", end)]:
        if token[0] != "pipe":
            group.append(token)
            continue
        if not group:
            raise _error("missing command around '|'", token[2])
        commands.append(_command(group, piped=bool(commands)))
        group = []
    return tuple(commands)


def _command(group: list[tuple[str, str | int, int]], *, piped: bool) -> _Command:
    kind, value, column = group[0]
    if kind != "function":
        if len(group) > 1:
            raise _error("only a function can take arguments", group[1][2])
        if piped:
            raise _error("cannot pipe into a value; pipe into a function", column)
        return _Command(None, (_Operand(kind, value, column),), column)
    args: list[_Operand] = []
    for arg_kind, arg_value, arg_column in group[1:]:
        if arg_kind == "function":
            raise _error(
                f"function {arg_value!r} used as an argument; use a pipeline instead", arg_column
            )
        args.append(_Operand(arg_kind, arg_value, arg_column))
    function = FUNCTIONS[str(value)]
    given = len(args) + (1 if piped else 0)
    if given != len(function.params):
        explicit = len(function.params) - (1 if piped else 0)
        raise _error(
            f"{value} takes {len(function.params)} argument(s) (the last may be piped); "
            f"got {given}" + (f", so write {explicit} after '{value}'" if piped else ""),
            column,
        )
    for operand, expected in zip(args, function.params, strict=False):
        actual = str if operand.kind == "field" else type(operand.value)
        if actual is not expected:
            raise _error(
                f"{value} wants {_TYPE_NAMES[expected]} here, got {_TYPE_NAMES[actual]}",
                operand.column,
            )
    if piped and function.params[-1] is not str:
        raise _error(f"{value} cannot take a piped string as its last argument", column)
    return _Command(str(value), tuple(args), column)


@lru_cache(maxsize=256)
def parse_key_name_template(template: str) -> _Template:
    """Parse (and cache) a template; raises TemplateError with the reason and position."""
    if not isinstance(template, str):
        raise TemplateError("template must be a string")
    if len(template) > MAX_TEMPLATE_LENGTH:
        raise TemplateError(f"template is longer than {MAX_TEMPLATE_LENGTH} characters")
    parts: list[str | tuple[_Command, ...]] = []
    pos = 0
    while True:
        # As in Go, only "{{" is special in text; a lone "}}" is plain text.
        open_at = template.find("{{", pos)
        if open_at < 0:
            parts.append(template[pos:])
            break
        text = template[pos:open_at]
        close_at = template.find("}}", open_at + 2)
        if close_at < 0:
            raise _error("'{{' without a matching '}}'", open_at)
        inner_start, inner_end = open_at + 2, close_at
        # Go's trim markers need whitespace next to the dash: "{{- x -}}"; "{{-3}}" is -3.
        if (
            inner_end - inner_start >= 2
            and template[inner_start] == "-"
            and (template[inner_start + 1].isspace())
        ):
            text = text.rstrip()
            inner_start += 1
        trim_next = (
            inner_end - inner_start >= 2
            and template[inner_end - 1] == "-"
            and template[inner_end - 2].isspace()
        )
        if trim_next:
            inner_end -= 1
        parts.append(text)
        parts.append(_pipeline(template, inner_start, inner_end))
        pos = close_at + 2
        if trim_next:
            while pos < len(template) and template[pos].isspace():
                pos += 1
    return _Template(tuple(part for part in parts if part != ""))


def _evaluate(pipeline: tuple[_Command, ...], fields: dict[str, str]) -> str | int:
    value: str | int | None = None
    for command in pipeline:
        args: list[str | int] = [
            fields[str(op.value)] if op.kind == "field" else op.value for op in command.args
        ]
        if command.function is None:
            value = args[0]
        else:
            if value is not None:
                args.append(value)
            value = FUNCTIONS[command.function].call(*args)
        if isinstance(value, str) and len(value) > MAX_VALUE_LENGTH:
            raise _error(f"value grows beyond {MAX_VALUE_LENGTH} characters", command.column)
    assert value is not None
    return value


def render_key_name_template(
    template: str, *, trust_domain: str, server_id: str, key_id: str
) -> str:
    """Render a key name template. Raises TemplateError (a ValueError) with a clear reason."""
    parsed = parse_key_name_template(template)
    fields = {"TrustDomain": trust_domain, "ServerID": server_id, "KeyID": key_id}
    out: list[str] = []
    for part in parsed.parts:
        out.append(part if isinstance(part, str) else str(_evaluate(part, fields)))
    result = "".join(out)
    if len(result) > MAX_VALUE_LENGTH:
        raise TemplateError(f"rendered name is longer than {MAX_VALUE_LENGTH} characters")
    return result
