"""Read untrusted YAML into plain JSON-like values, refusing hostile input early.

We do not use yaml.safe_load: its composer is recursive (a deeply nested document overflows
the stack), it expands aliases (billion laughs) and it silently keeps the last of two
duplicate keys. Instead we walk the parser's event stream (an iterative state machine) and
build the values ourselves, so every limit is checked before any work is spent on it:

- depth is the length of an explicit stack, never Python recursion; before any parser runs, a
  bracket count refuses flow collections (`[[[[...`) nested past the limit, because a parser's
  look-ahead reads up to 1,024 characters before it hands us an event and newer libyaml
  releases stop at 1,000 levels there with their own error;
- each anchor remembers the node count and height of its subtree, so an alias costs O(1)
  to account for while the expanded node count (what a consumer would see) stays exact;
- only the JSON-compatible core tags are accepted; anything else (!!python/object, !!binary,
  !!set, custom tags) is refused by name;
- mapping keys must be unique strings; merge keys (<<) are refused.

Scalars are resolved like yaml.safe_load except that unquoted dates stay strings: a tag
value such as `2024-01-01` is meant as text, and documents must stay JSON-compatible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.nodes import ScalarNode

from .errors import InputRejectedError
from .limits import DEFAULT_LIMITS, Limits

__all__ = ["decode_upload", "load_documents"]

_CORE = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_CORE + t for t in ("str", "int", "float", "bool", "null"))
_MAP, _SEQ, _MERGE, _VALUE = (_CORE + t for t in ("map", "seq", "merge", "value"))
_TIMESTAMP = _CORE + "timestamp"
_SCALAR_TAGS = {_STR, _INT, _FLOAT, _BOOL, _NULL}
# "!" is the non-specific tag a quoted scalar may carry: it means "resolve as usual".
_NON_SPECIFIC = {None, "!"}


class _Resolver(yaml.resolver.Resolver):
    """The safe_load resolver without implicit timestamps."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
    }


def decode_upload(data: bytes | str, limits: Limits = DEFAULT_LIMITS) -> str:
    """Check the upload size and decode it as strict UTF-8 (an optional BOM is dropped)."""
    if isinstance(data, str):
        # A str longer than the limit in characters is longer in bytes too: no need to encode.
        if len(data) > limits.max_upload_bytes:
            raise _too_large_upload(limits)
        try:
            size = len(data.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise InputRejectedError(
                f"input is not valid Unicode text: invalid character at offset {exc.start}"
            ) from None
        if size > limits.max_upload_bytes:
            raise _too_large_upload(limits)
        text = data
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if len(raw) > limits.max_upload_bytes:
            raise _too_large_upload(limits)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputRejectedError(
                f"input is not UTF-8: invalid byte 0x{raw[exc.start]:02x} at byte offset {exc.start}"
            ) from None
    else:
        raise TypeError(f"expected bytes or str, got {type(data).__name__}")
    text = text.removeprefix("\ufeff")
    bad = _NOT_YAML_TEXT.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise InputRejectedError(
            f"character U+{ord(bad.group()):04X} at line {line}, column {column}: control "
            "characters are not allowed in YAML text (write them as escapes in a double-quoted "
            "string)"
        )
    return text


# YAML's printable set (YAML 1.1 §5.1, as PyYAML's reader enforces it): checked here so the
# refusal and its wording are ours whichever parser or version runs.
_NOT_YAML_TEXT = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _too_large_upload(limits: Limits) -> InputRejectedError:
    return InputRejectedError(
        f"upload is larger than {limits.max_upload_bytes} bytes", too_large=True
    )


@dataclass
class _Frame:
    """An open mapping or sequence while its events stream in."""

    value: dict[str, Any] | list[Any]
    anchor: str | None
    line: int
    count: int = 1  # expanded nodes in this subtree, itself included
    height: int = 1  # container nesting below and including this one
    key: str | None = None  # mapping: key read, value not yet
    key_lines: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Anchored:
    value: Any
    count: int
    height: int  # 0 for scalars


# Integers are 64-bit, as in JSON's interoperable range and every database we store to. The
# longest 64-bit literal YAML 1.1 allows is binary with underscores (130 characters).
_MAX_INT_CHARS = 200


def _out_of_range(event: ScalarEvent) -> InputRejectedError:
    return InputRejectedError(
        f"scalar at line {_line(event)} cannot be read as int: integers must fit in 64 bits "
        "(quote the value if it is text)"
    )


def _show(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _line(event: Event) -> int:
    mark: Any = event.start_mark
    return int(mark.line) + 1 if mark is not None else 0


def _start_index(event: Event) -> int:
    mark: Any = event.start_mark
    return int(mark.index) if mark is not None else 0


def _end_index(event: Event) -> int:
    mark: Any = event.end_mark
    return int(mark.index) if mark is not None else 0


class _Builder:
    """Turns one event stream into documents; every check raises InputRejectedError."""

    def __init__(self, text: str, limits: Limits) -> None:
        self.text = text
        self.limits = limits
        self.resolver = _Resolver()
        self.constructor = SafeConstructor()
        self.documents: list[tuple[int, dict[str, Any]]] = []
        self.doc_index = -1
        self.doc_start = 0
        self.nodes = 0
        self.aliases = 0
        self._reset_document()

    def _reset_document(self) -> None:
        self.stack: list[_Frame] = []
        self.anchors: dict[str, _Anchored] = {}
        self.open_anchors: set[str] = set()
        self.root: Any = None

    # -- limits ---------------------------------------------------------------------------

    def _count_nodes(self, count: int, event: Event) -> None:
        self.nodes += count
        if self.nodes > self.limits.max_nodes:
            raise InputRejectedError(
                f"upload has more than {self.limits.max_nodes} YAML nodes counting every alias "
                f"expansion (line {_line(event)}); refusing it (a YAML bomb looks like this)"
            )

    def _check_depth(self, depth: int, event: Event) -> None:
        if depth > self.limits.max_depth:
            raise InputRejectedError(
                f"document {self.doc_index} nests mappings/sequences deeper than "
                f"{self.limits.max_depth} levels (line {_line(event)})"
            )

    def _check_document_size(self, end_index: int, *, exact: bool) -> None:
        # Marks count characters; a character is at least one byte, so the character count
        # is a cheap lower bound while the document streams in, and exact at its end.
        size = end_index - self.doc_start
        if exact and size <= self.limits.max_document_bytes:
            size = len(self.text[self.doc_start : end_index].encode("utf-8"))
        if size > self.limits.max_document_bytes:
            raise InputRejectedError(
                f"document {self.doc_index} is larger than {self.limits.max_document_bytes} bytes",
                too_large=True,
            )

    # -- events ---------------------------------------------------------------------------

    def feed(self, event: Event) -> None:
        if isinstance(event, DocumentStartEvent):
            self.doc_index += 1
            # Empty documents are skipped, not free: bound them too (twice the real limit).
            if self.doc_index >= 2 * self.limits.max_documents:
                raise InputRejectedError(
                    f"upload has more than {2 * self.limits.max_documents} documents counting "
                    f"empty ones (line {_line(event)})"
                )
            self.doc_start = _start_index(event)
            self._reset_document()
            return
        if isinstance(event, DocumentEndEvent):
            self._check_document_size(_end_index(event), exact=True)
            self._end_document(event)
            return
        if self.doc_index >= 0:
            self._check_document_size(_end_index(event), exact=False)
        if isinstance(event, ScalarEvent):
            self._scalar(event)
        elif isinstance(event, MappingStartEvent | SequenceStartEvent):
            self._start(event)
        elif isinstance(event, MappingEndEvent | SequenceEndEvent):
            frame = self.stack.pop()
            if frame.anchor is not None:
                self.open_anchors.discard(frame.anchor)
                self.anchors[frame.anchor] = _Anchored(frame.value, frame.count, frame.height)
            self._attach(frame.value, frame.count, frame.height, event)
        elif isinstance(event, AliasEvent):
            self._alias(event)
        # StreamStart/StreamEnd carry nothing.

    def _end_document(self, event: Event) -> None:
        root = self.root
        if root is None:
            return  # empty document (e.g. a trailing ---): ignored
        if not isinstance(root, dict):
            # The scalar itself is not echoed: a pasted secret would end up in an error.
            kind = "a list" if isinstance(root, list) else f"a single {type(root).__name__} value"
            raise InputRejectedError(
                f"document {self.doc_index} is {kind}; each document must be a mapping "
                "with section, schema and spec"
            )
        self.documents.append((self.doc_index, root))
        if len(self.documents) > self.limits.max_documents:
            raise InputRejectedError(
                f"upload has more than {self.limits.max_documents} documents (line {_line(event)})"
            )

    def _check_tag(self, tag: str | None, allowed: set[str], event: Event) -> None:
        if tag in _NON_SPECIFIC or tag in allowed:
            return
        shown = tag.replace(_CORE, "!!") if tag else tag
        raise InputRejectedError(
            f"YAML tag {shown} at line {_line(event)} is not allowed; only plain data "
            "(strings, numbers, booleans, null, mappings, lists) may be used"
        )

    def _scalar(self, event: ScalarEvent) -> None:
        self._check_tag(event.tag, _SCALAR_TAGS, event)
        self._count_nodes(1, event)
        tag = str(
            self.resolver.resolve(ScalarNode, event.value, event.implicit)
            if event.tag in _NON_SPECIFIC
            else event.tag
        )
        frame = self.stack[-1] if self.stack else None
        wants_key = (
            isinstance(frame, _Frame) and isinstance(frame.value, dict) and frame.key is None
        )
        if tag == _MERGE:
            if wants_key:
                raise InputRejectedError(
                    f"merge keys (<<) are not supported (line {_line(event)}); write the keys out"
                )
            tag = _STR
        elif tag == _VALUE:
            tag = _STR
        if tag == _STR:
            value: Any = event.value  # the common case needs no constructor
        else:
            value = self._construct(tag, event)
        if event.anchor is not None:
            self.anchors[event.anchor] = _Anchored(value, 1, 0)
        self._attach(value, 1, 0, event)

    def _construct(self, tag: str, event: ScalarEvent) -> Any:
        node = ScalarNode(tag, event.value)
        kind = tag.replace(_CORE, "")
        if tag == _INT and len(event.value) > _MAX_INT_CHARS:
            # Checked before int() runs: a long hex or octal literal converts to a number whose
            # decimal form Python refuses to print (over 4,300 digits) wherever it is shown.
            raise _out_of_range(event)
        try:
            value = self.constructor.yaml_constructors[tag](self.constructor, node)
        except (ValueError, yaml.YAMLError):
            # The exception's text is not echoed: it quotes the value, which may be anything.
            raise InputRejectedError(
                f"scalar at line {_line(event)} cannot be read as {kind}"
            ) from None
        if tag == _INT and not -(2**63) <= value < 2**63:
            raise _out_of_range(event)
        return value

    def _start(self, event: MappingStartEvent | SequenceStartEvent) -> None:
        is_map = isinstance(event, MappingStartEvent)
        self._check_tag(event.tag, {_MAP} if is_map else {_SEQ}, event)
        self._refuse_complex_key(event)
        self._count_nodes(1, event)
        self._check_depth(len(self.stack) + 1, event)
        frame = _Frame({} if is_map else [], event.anchor, _line(event))
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        self.stack.append(frame)

    def _alias(self, event: AliasEvent) -> None:
        self.aliases += 1
        if self.aliases > self.limits.max_aliases:
            raise InputRejectedError(
                f"upload uses more than {self.limits.max_aliases} aliases (line {_line(event)})"
            )
        name = str(event.anchor)
        if name in self.open_anchors:
            raise InputRejectedError(
                f"alias *{name} at line {_line(event)} refers to a node that contains it "
                "(recursive structures are not allowed)"
            )
        anchored = self.anchors.get(name)
        if anchored is None:
            raise InputRejectedError(f"alias *{name} at line {_line(event)} has no anchor &{name}")
        if anchored.height:
            self._refuse_complex_key(event)
        self._count_nodes(anchored.count, event)
        self._check_depth(len(self.stack) + anchored.height, event)
        self._attach(anchored.value, anchored.count, anchored.height, event)

    def _refuse_complex_key(self, event: Event) -> None:
        if self.stack and isinstance(self.stack[-1].value, dict) and self.stack[-1].key is None:
            raise InputRejectedError(
                f"mapping key at line {_line(event)} is a mapping or list; keys must be strings"
            )

    def _attach(self, value: Any, count: int, height: int, event: Event) -> None:
        if not self.stack:
            self.root = value
            return
        frame = self.stack[-1]
        frame.count += count
        frame.height = max(frame.height, height + 1)
        if isinstance(frame.value, list):
            frame.value.append(value)
            return
        if frame.key is None:
            if not isinstance(value, str):
                raise InputRejectedError(
                    f"mapping key {_show(value)} at line {_line(event)} is not a string "
                    f"({type(value).__name__}); quote it"
                )
            first = frame.key_lines.get(value)
            if first is not None:
                raise InputRejectedError(
                    f"duplicate key {_show(value)} at line {_line(event)} "
                    f"(first at line {first}); each key may appear once"
                )
            frame.key_lines[value] = _line(event)
            frame.key = value
        else:
            frame.value[frame.key] = value
            frame.key = None


def load_documents(
    data: bytes | str, limits: Limits = DEFAULT_LIMITS
) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """Parse every YAML document of an upload.

    Returns ([(index in the stream, mapping)], number of documents in the stream); empty
    documents are left out of the list. Raises InputRejectedError for anything hostile or
    malformed.
    """
    text = decode_upload(data, limits)
    _check_flow_depth(text, limits)
    builder = _Builder(text, limits)
    parser: Any = None
    try:
        # Inside the try: PyYAML's reader checks the characters when it is made.
        parser = _make_parser(text)
        while True:
            event = parser.get_event()
            if event is None:
                break
            builder.feed(event)
    except yaml.MarkedYAMLError as exc:
        raise InputRejectedError(f"not valid YAML: {_describe(exc)}") from None
    except yaml.YAMLError as exc:
        raise InputRejectedError(f"not valid YAML: {_first_line(str(exc))}") from None
    finally:
        if parser is not None:
            parser.dispose()
    return builder.documents, builder.doc_index + 1


# A parser reaches its own nesting limit (libyaml: 1,000) only when that many brackets open
# within its look-ahead; with fewer brackets than this in the whole upload it never can.
_FLOW_BRACKETS_WITHOUT_RISK = 256
_BRACKETS = re.compile(r"[\[\]{}]")


def _check_flow_depth(text: str, limits: Limits) -> None:
    """Refuse flow collections nested deeper than the limit, before any parser sees them.

    Brackets inside quoted scalars or comments are counted too: the count is an upper bound of
    the real nesting (closers only lower it to zero), so a document refused here nests at least
    that deep unless it quotes dozens of unbalanced brackets. Only uploads with many brackets
    pay for the scan; the parse itself enforces the exact limit on every document.
    """
    if text.count("[") + text.count("{") <= _FLOW_BRACKETS_WITHOUT_RISK:
        return
    depth = 0
    for match in _BRACKETS.finditer(text):
        if match.group() in "[{":
            depth += 1
            if depth > limits.max_depth:
                line = text.count("\n", 0, match.start()) + 1
                raise InputRejectedError(
                    f"upload nests flow collections ('[', '{{') deeper than "
                    f"{limits.max_depth} levels (line {line})"
                )
        elif depth:
            depth -= 1


# Tests switch this off to run the same checks over PyYAML's pure-Python parser.
_USE_LIBYAML: bool = bool(getattr(yaml, "__with_libyaml__", False))


def _make_parser(text: str) -> Any:
    """libyaml's parser when present (fast, iterative); else PyYAML's own (iterative too)."""
    if _USE_LIBYAML:
        from yaml import _yaml

        return _yaml.CParser(text)
    return yaml.SafeLoader(text)


def _describe(exc: yaml.MarkedYAMLError) -> str:
    parts = [p for p in (exc.context, exc.problem) if p]
    mark = exc.problem_mark or exc.context_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return _first_line(", ".join(parts) or "syntax error") + where


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else "syntax error"
