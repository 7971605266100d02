"""Hostile and malformed HTTP requests, with the 4xx each must get (issue 9, items 5 and 6).

`REQUESTS` is data: any test can replay it against a live control plane. Paths and bodies
name the objects of a topology with placeholders: {td}, {tdd}, {cluster}, {server}. Every
case expects our status, our error code and a substring of our message; the runner checks
that nothing was stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from support.api import KEY_MANAGER_AZURE

__all__ = ["REQUESTS", "BadRequestCase", "worst_case_upload"]

_NO_BODY = object()
LIFECYCLE = "section: KeyLifecycle\nschema: v1\nspec:\n  x509CATTL: 9h\n"
HUGE = "99999999999999999999999"  # 23 digits
CONFIG = "/v1/config/trust-domain/{td}"


@dataclass(frozen=True)
class BadRequestCase:
    name: str
    method: str
    path: str
    status: int
    error: str
    message: str  # substring of our message
    json: Any = _NO_BODY
    content: bytes | None = None
    content_type: str = "application/json"
    token: str = "admin"  # or "server": the registered server's credential

    def __str__(self) -> str:
        return self.name

    def body(self) -> dict[str, Any]:
        """httpx keyword arguments for the body."""
        if self.content is not None:
            return {"content": self.content, "headers": {"Content-Type": self.content_type}}
        if self.json is not _NO_BODY:
            return {"json": self.json}
        return {}


def _bad(name: str, method: str, path: str, message: str, **kw: Any) -> BadRequestCase:
    return BadRequestCase(name, method, path, 400, "bad_request", message, **kw)


def _put(name: str, body: dict[str, Any], message: str) -> BadRequestCase:
    return _bad(name, "PUT", CONFIG, message, json={"yaml": LIFECYCLE, **body})


BOUND = "must be an integer from"
REQUESTS: list[BadRequestCase] = [
    # Huge integers in paths, queries and bodies: 400, never a database error.
    _bad("version-path-huge", "GET", CONFIG + "/versions/" + HUGE, "version " + BOUND),
    _bad("version-path-zero", "GET", CONFIG + "/versions/0", "version " + BOUND),
    _bad("version-path-sign", "GET", CONFIG + "/versions/+1", "version must be a whole number"),
    _bad("version-path-space", "GET", CONFIG + "/versions/%201", "version must be a whole number"),
    _bad("version-path-hex", "GET", CONFIG + "/versions/0x10", "version must be a whole number"),
    _bad("diff-to-huge", "GET", CONFIG + "/diff?from=0&to=" + HUGE, "to " + BOUND),
    _bad(
        "diff-from-fraction", "GET", CONFIG + "/diff?from=1.0&to=1", "from must be a whole number"
    ),
    _bad("diff-missing-to", "GET", CONFIG + "/diff?from=1", "to is required"),
    _bad("history-limit-huge", "GET", CONFIG + "/history?limit=" + HUGE, "limit " + BOUND),
    _bad("history-limit-over-max", "GET", CONFIG + "/history?limit=201", "limit " + BOUND),
    _bad("history-before-negative", "GET", CONFIG + "/history?before=-1", "whole number"),
    _bad("audit-limit-over-max", "GET", "/v1/audit?limit=501", "limit " + BOUND),
    _bad("audit-before-huge", "GET", "/v1/audit?before=" + HUGE, "before " + BOUND),
    _bad(
        "delete-section-expected-huge",
        "DELETE",
        CONFIG + "/sections/KeyLifecycle?expected_version=" + HUGE,
        "expected_version " + BOUND,
    ),
    _bad(
        "rollback-version-23-digits",
        "POST",
        CONFIG + "/rollback",
        "integer of 23 digits",
        content=b'{"version": ' + HUGE.encode() + b"}",
    ),
    _bad(
        "rollback-version-huge",
        "POST",
        CONFIG + "/rollback",
        "version " + BOUND,
        json={"version": 99_999_999_999},
    ),
    _bad(
        "rollback-version-string",
        "POST",
        CONFIG + "/rollback",
        "version must be a JSON integer, not a string",
        json={"version": "1"},
    ),
    _bad("rollback-version-missing", "POST", CONFIG + "/rollback", "version is required", json={}),
    _bad(
        "join-token-ttl-huge",
        "POST",
        "/v1/trust-domain-deployments/{tdd}/join-tokens",
        "ttl_seconds " + BOUND,
        json={"ttl_seconds": 10**18},
    ),
    _bad(
        "join-token-ttl-over-a-week",
        "POST",
        "/v1/trust-domain-deployments/{tdd}/join-tokens",
        "ttl_seconds may be at most 604800",
        json={"ttl_seconds": 2**31 - 1},
    ),
    _bad(
        "join-token-ttl-float",
        "POST",
        "/v1/trust-domain-deployments/{tdd}/join-tokens",
        "ttl_seconds must be a JSON integer, not a number",
        json={"ttl_seconds": 3600.0},
    ),
    # Strict JSON integers for expected_version.
    _put(
        "expected-version-string",
        {"expected_version": "93"},
        "expected_version must be a JSON integer, not a string",
    ),
    _put(
        "expected-version-padded",
        {"expected_version": " 9"},
        "expected_version must be a JSON integer, not a string",
    ),
    _put(
        "expected-version-float",
        {"expected_version": 94.0},
        "expected_version must be a JSON integer, not a number",
    ),
    _put(
        "expected-version-bool",
        {"expected_version": True},
        "expected_version must be a JSON integer, not a boolean",
    ),
    _put("expected-version-negative", {"expected_version": -1}, "expected_version " + BOUND),
    _put("validate-only-string", {"validate_only": "false"}, "validate_only must be true or false"),
    _bad(
        "expected-version-query-padded",
        "PUT",
        CONFIG + "?expected_version=%209",
        "expected_version must be a whole number",
        content=LIFECYCLE.encode(),
        content_type="application/yaml",
    ),
    # JSON itself: duplicate keys, nesting, non-JSON numbers, encoding, shape.
    _bad(
        "duplicate-key-validate-only",
        "PUT",
        CONFIG,
        "has the key 'validate_only' twice",
        content=b'{"yaml": "section: KeyLifecycle\\nschema: v1\\nspec:\\n  x509CATTL: 9h\\n",'
        b' "validate_only": true, "validate_only": false}',
    ),
    _bad(
        "json-nested-100k-deep",
        "PUT",
        CONFIG,
        "deeper than 32 levels",
        content=b'{"yaml": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ),
    _bad(
        "json-nested-100k-deep-objects",
        "POST",
        "/v1/trust-domains",
        "deeper than 32 levels",
        content=b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    ),
    # Unterminated strings after enough brackets to need the depth scan: the scan once restarted
    # at every quote (time quadratic in the body: this one took minutes); now one pass.
    _bad(
        "json-unterminated-strings",
        "POST",
        "/v1/trust-domains",
        "not valid JSON",
        content=b"[]" * 33 + b'"\\' * 300_000,
    ),
    _bad("json-nan", "PUT", CONFIG, "holds NaN", content=b'{"yaml": "x", "expected_version": NaN}'),
    _bad(
        "json-not-utf8",
        "POST",
        "/v1/trust-domains",
        "not UTF-8",
        content=b'{"name": "caf\xe9.org"}',
    ),
    _bad("json-array", "POST", "/v1/trust-domains", "must be a JSON object", json=["a"]),
    _bad("json-malformed", "POST", "/v1/trust-domains", "not valid JSON", content=b'{"name": '),
    # The long-poll's query, with the server's own credential.
    _bad(
        "sync-config-version-huge",
        "GET",
        "/v1/servers/{server}/sync?config_version=" + HUGE,
        "config_version " + BOUND,
        token="server",
    ),
    _bad(
        "sync-wait-nan",
        "GET",
        "/v1/servers/{server}/sync?wait=nan",
        "wait must be a non-negative number",
        token="server",
    ),
    _bad(
        "sync-wait-infinite",
        "GET",
        "/v1/servers/{server}/sync?wait=1e999",
        "wait must be a non-negative number",
        token="server",
    ),
]
assert len({case.name for case in REQUESTS}) == len(REQUESTS)


DOCUMENT = KEY_MANAGER_AZURE + (
    "      sharedKeys:\n"
    "        keyNameTemplate: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-{{ .KeyID }}'\n"
    "        keyIdExtractionRegex: '^(?:a+)+b(.*)$'\n"
    "      keyTags:\n"
)


def worst_case_upload() -> bytes:
    """A config PUT body just under 1 MiB that costs the most to refuse: 20 KeyManager documents,
    each with the regex that hung Python's re (a 40-character template prefix) and ~50 KB of tags."""
    tags = "".join(f'        "tag{i}": "{"x" * 190}"\n' for i in range(231))
    body = json.dumps({"yaml": "---\n".join([DOCUMENT + tags] * 20)}).encode()
    assert 1_000_000 < len(body) <= 1_048_576
    return body
