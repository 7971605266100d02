"""Semantic rules JSON Schema cannot express, per section and version.

Each rule function takes the document's `spec` (possibly of the wrong shape: schema problems
are reported separately, so rules look only at values of the right type) and the name of the
trust domain of the scope the document is set at, and returns [(pointer, reason)]. Where a rule
and the schema flag the same pointer, the rule's reason wins: it is the more precise one.

The trust domain is None when the caller does not know it (`terraform validate`, a parse
before the scope is looked up): a check whose outcome depends on the trust domain (the
shared-keys key names and regex) is then deferred to a caller who knows it (the control plane
on every write, the Terraform provider at plan time), never run against a made-up one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from . import pointer
from .durations import parse_duration
from .key_names import is_valid_key_vault_key_name
from .patterns import PatternError, compile_pattern
from .rollout import rollout_v1
from .schema_check import show
from .tags import (
    RESERVED_TAG_PREFIXES,
    key_tag_problems,
)
from .templates import TemplateError, render_key_name_template

__all__ = [
    "RESERVED_TAG_PREFIXES",
    "RULES",
    "SAMPLE_KEY_IDS",
    "SAMPLE_SERVER_ID",
    "SAMPLE_TRUST_DOMAIN",
    "check_key_id_regex",
    "key_manager_type",
    "url_problem",
]

Problems = list[tuple[str, str]]

SAMPLE_TRUST_DOMAIN = "example.org"
SAMPLE_SERVER_ID = "5f0c8a43-1b7e-4d2a-9c61-3e8f2b7d9a10"
SAMPLE_KEY_IDS = ("jwt-signer-a", "x509-ca-a")
MAX_WEBHOOK_TIMEOUT = timedelta(seconds=60)
MIN_KEY_TTL = timedelta(minutes=1)
MAX_KEY_TTL = timedelta(days=365)
# A suggestion that always works: a fixed-width trust domain part the regex can skip.
_REGEX_TIP = (
    "tip: give the trust domain part a fixed width, e.g. keyNameTemplate "
    "'spire-{{ .TrustDomain | sha256sum | trunc 8 }}-{{ .KeyID }}' with "
    "keyIdExtractionRegex '^spire-[0-9a-f]{8}-(.+)$'"
)

AKV = "/spec/extensions/azureKeyVault"
WEBHOOK = "/spec/extensions/webhook"


def key_manager_type(spec: Any) -> str:
    """The key manager a (valid) KeyManager spec selects: default, azureKeyVault or webhook."""
    extensions = spec.get("extensions") if isinstance(spec, dict) else None
    if isinstance(extensions, dict) and extensions:
        return str(next(iter(extensions)))
    return "default"


def url_problem(value: str, *, schemes: tuple[str, ...], path_allowed: bool) -> str | None:
    """Why a URL is unacceptable, or None. Never echoes the URL: it may hold credentials."""
    want = " or ".join(schemes)
    if any(char.isspace() or ord(char) < 0x20 for char in value):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    del port
    if parts.scheme.lower() not in schemes:
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        return f"must use {want} (got {got})"
    if "@" in parts.netloc:
        return (
            "must not contain user info (user:password@); credentials never go into configuration"
        )
    if not parts.hostname:
        return f"must have a host, e.g. {schemes[0]}://<name>.example.com/"
    if parts.fragment or "#" in value:
        return "must not have a fragment (#...)"
    if not path_allowed:
        if parts.path not in ("", "/"):
            return "must not have a path: use the vault's base URL, e.g. https://<vault-name>.vault.azure.net/"
        if parts.query or "?" in value:
            return "must not have a query (?...)"
    return None


def check_key_id_regex(
    regex: str,
    samples: list[tuple[str, str]],
    *,
    require_match: bool = True,
    trust_domain: str = SAMPLE_TRUST_DOMAIN,
) -> str | None:
    """Why `regex` cannot recover key ids from key names, or None.

    `samples` are (key name, key id it must yield) pairs, the names rendered for
    `trust_domain`. Like the server, we search with RE2 (Go's syntax and linear-time semantics,
    see patterns.py) and take the first capture group. With `require_match` False a sample the
    regex does not match at all is accepted: the names then depend on the server id, which a
    regex may spell out literally, and the server checks again with the real value.
    """
    try:
        compiled = compile_pattern(regex)
    except PatternError as exc:
        return str(exc)
    if compiled.groups != 1:
        return (
            f"must have exactly one capture group, it has {compiled.groups}; "
            "use (?:...) for groups that should not capture"
        )
    for name, key_id in samples:
        match = compiled.search(name)
        if match is None and not require_match:
            continue
        if match is None:
            return (
                f"does not match {name!r}, the name keyNameTemplate gives key id {key_id!r} "
                f"in trust domain {trust_domain!r}"
            )
        captured = match.group(1)
        if captured != key_id:
            got = "nothing" if captured is None else repr(captured)
            return (
                f"applied to {name!r} (keyNameTemplate for trust domain {trust_domain!r}, "
                f"key id {key_id!r}) it captures {got}, not the key id {key_id!r}; "
                f"the capture group must match exactly the key id part. {_REGEX_TIP}"
            )
    return None


def _renders_differently(template: str, samples: list[tuple[str, str]], **fields: str) -> bool:
    """Whether changing `fields` (trust_domain or server_id) changes any sample's name."""
    base = {"trust_domain": SAMPLE_TRUST_DOMAIN, "server_id": SAMPLE_SERVER_ID, **fields}
    return any(
        render_key_name_template(template, key_id=key_id, **base) != name
        for name, key_id in samples
    )


def _shared_keys(shared: dict[str, Any], trust_domain: str | None) -> Problems:
    base = AKV + "/sharedKeys"
    template = shared.get("keyNameTemplate")
    regex = shared.get("keyIdExtractionRegex")
    problems: Problems = []
    samples: list[tuple[str, str]] = []
    depends_on_server = deferred = False
    td = trust_domain or SAMPLE_TRUST_DOMAIN
    if isinstance(template, str) and template:
        where = base + "/keyNameTemplate"
        try:
            samples = [
                (
                    render_key_name_template(
                        template, trust_domain=td, server_id=SAMPLE_SERVER_ID, key_id=key_id
                    ),
                    key_id,
                )
                for key_id in SAMPLE_KEY_IDS
            ]
            # Names that change with the server id cannot be known here; names that change
            # with the trust domain only when the caller gave it.
            depends_on_server = _renders_differently(
                template, samples, trust_domain=td, server_id="other-server"
            )
            deferred = trust_domain is None and _renders_differently(
                template, samples, trust_domain="other.test"
            )
        except TemplateError as exc:
            problems.append((where, f"is not a valid template: {exc}"))
        if len(samples) == 2 and samples[0][0] == samples[1][0]:
            problems.append(
                (
                    where,
                    f"gives the same name {samples[0][0]!r} to different key ids; "
                    "include {{ .KeyID }} so every key gets its own name",
                )
            )
            samples = []
        if deferred:
            samples = []
        for name, key_id in samples:
            if not is_valid_key_vault_key_name(name):
                problems.append(
                    (
                        where,
                        f"renders {show(name, 80)} for trust domain {td!r} and "
                        f"key id {key_id!r}: not a valid Key Vault key name (only letters, "
                        "digits and '-', 1 to 127 characters); e.g. use "
                        '{{ .TrustDomain | replace "." "-" }}',
                    )
                )
                samples = []
                break
    if isinstance(regex, str) and regex:
        # With the template missing, broken or deferred, samples is empty: the regex is still
        # checked on its own (compiles, one capture group).
        reason = check_key_id_regex(
            regex, samples, require_match=not depends_on_server, trust_domain=td
        )
        if reason:
            problems.append((base + "/keyIdExtractionRegex", reason))
    return problems


def _azure_key_vault(akv: dict[str, Any], trust_domain: str | None) -> Problems:
    problems: Problems = []
    url = akv.get("vaultURL")
    if isinstance(url, str):
        reason = url_problem(url, schemes=("https",), path_allowed=False)
        if reason:
            problems.append((AKV + "/vaultURL", reason))
    tags = akv.get("keyTags")
    if isinstance(tags, dict):
        for tag, reason in key_tag_problems(tags):
            where = AKV + "/keyTags"
            problems.append((where if tag is None else pointer.join(where, tag), reason))
    shared = akv.get("sharedKeys")
    if isinstance(shared, dict):
        problems.extend(_shared_keys(shared, trust_domain))
    return problems


def _webhook(hook: dict[str, Any]) -> Problems:
    problems: Problems = []
    url = hook.get("webhookURL")
    if isinstance(url, str):
        reason = url_problem(url, schemes=("http", "https"), path_allowed=True)
        if reason:
            problems.append((WEBHOOK + "/webhookURL", reason))
    timeout = hook.get("timeout")
    if isinstance(timeout, str):
        try:
            if parse_duration(timeout) > MAX_WEBHOOK_TIMEOUT:
                problems.append((WEBHOOK + "/timeout", "must be at most 60s"))
        except ValueError as exc:
            problems.append((WEBHOOK + "/timeout", str(exc)))
    return problems


def key_manager_v1(spec: Any, trust_domain: str | None = None) -> Problems:
    if not isinstance(spec, dict):
        return []
    extensions = spec.get("extensions")
    if not isinstance(extensions, dict):
        return []
    problems: Problems = []
    akv = extensions.get("azureKeyVault")
    if isinstance(akv, dict):
        problems.extend(_azure_key_vault(akv, trust_domain))
    hook = extensions.get("webhook")
    if isinstance(hook, dict):
        problems.extend(_webhook(hook))
    return problems


def key_lifecycle_v1(spec: Any, trust_domain: str | None = None) -> Problems:
    if not isinstance(spec, dict):
        return []
    problems: Problems = []
    for name in ("x509CATTL", "jwtKeyTTL"):
        value = spec.get(name)
        if not isinstance(value, str):
            continue
        try:
            duration = parse_duration(value)
        except ValueError as exc:
            problems.append(("/spec/" + name, str(exc)))
            continue
        if not MIN_KEY_TTL <= duration <= MAX_KEY_TTL:
            problems.append(("/spec/" + name, "must be between 1m and 365d"))
    return problems


RULES: dict[tuple[str, str], Callable[[Any, str | None], Problems]] = {
    ("KeyManager", "v1"): key_manager_v1,
    ("KeyLifecycle", "v1"): key_lifecycle_v1,
    ("Rollout", "v1"): rollout_v1,
}
