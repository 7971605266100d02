"""The provider block's settings, merged with the environment, each problem naming its source.

A value comes from the provider block or, when the block leaves it out, from `$SPIRL_ENDPOINT` /
`$SPIRL_TOKEN`; an error says which (a bad `$SPIRL_ENDPOINT` is not blamed on the block).
`terraform validate` checks the block alone (`block_problems`); configuration, right before a
plan or apply, checks everything (`resolve`). Pure: the environment is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from controlplane.terraform.client import DEFAULT_RETRIES, DEFAULT_TIMEOUT_SECONDS
from controlplane.tls import CA_FILE_ENV

__all__ = [
    "ENV_CA_FILE",
    "ENV_ENDPOINT",
    "ENV_TOKEN",
    "MAX_RETRIES",
    "MAX_TIMEOUT_SECONDS",
    "Problem",
    "Settings",
    "block_problems",
    "resolve",
]

ENV_ENDPOINT = "SPIRL_ENDPOINT"
ENV_TOKEN = "SPIRL_TOKEN"
ENV_CA_FILE = CA_FILE_ENV
MAX_TIMEOUT_SECONDS = 600
MAX_RETRIES = 10


@dataclass(frozen=True)
class Problem:
    """One bad setting: `attribute` is set when the value came from the block (the diagnostic
    then points at it), None when it came from the environment."""

    summary: str
    detail: str
    attribute: str | None


@dataclass(frozen=True)
class Settings:
    endpoint: str
    token: str
    timeout: float
    retries: int
    ca_file: str | None = None  # from the block or $SPIRL_CA_FILE; None: the system trust store
    ca_file_from_block: bool = False


def endpoint_problem(value: str) -> str | None:
    """Why `value` cannot be the control plane's base URL, or None.

    Not controlplane.documents' url_problem: that module costs ~110 ms to import, on the path of
    every provider start, and the rules differ (http allowed, a path prefix allowed for a proxy).
    """
    if not value.strip():
        return "is empty"
    if any(char.isspace() or ord(char) < 0x20 for char in value):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"must be an http:// or https:// URL, e.g. http://127.0.0.1:8080 (got {value!r})"
    if not parts.hostname:
        return f"has no host (got {value!r})"
    if "@" in parts.netloc:
        return "must not hold user info (user:password@); the token goes in `token`"
    if parts.query or parts.fragment:
        return f"must not have a query or fragment (got {value!r})"
    return None


def _number_problem(value: Any, name: str, low: float, high: float, whole: bool) -> str | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None  # unknown until apply
    if whole and value != int(value):
        return f"{name} must be a whole number, got {value}"
    if not low <= value <= high:
        return f"{name} must be between {low:g} and {high:g}, got {value:g}"
    return None


def block_problems(config: Mapping[str, Any] | None) -> list[Problem]:
    """What is wrong with the values written in the provider block (unknown values pass)."""
    config = config or {}
    problems: list[Problem] = []
    endpoint = config.get("endpoint")
    if isinstance(endpoint, str):
        reason = endpoint_problem(endpoint)
        if reason:
            problems.append(
                Problem(
                    "Invalid endpoint",
                    f"`endpoint` in the provider block {reason}. Remove it to use ${ENV_ENDPOINT}.",
                    "endpoint",
                )
            )
    token = config.get("token")
    if isinstance(token, str) and not token.strip():
        problems.append(
            Problem(
                "Empty token",
                f"`token` in the provider block is empty. Give the control plane token, or "
                f"remove the attribute to use ${ENV_TOKEN}.",
                "token",
            )
        )
    for name, low, high, whole in (
        ("request_timeout", 1, MAX_TIMEOUT_SECONDS, False),
        ("max_retries", 0, MAX_RETRIES, True),
    ):
        reason = _number_problem(config.get(name), f"`{name}`", low, high, whole)
        if reason:
            problems.append(Problem(f"Invalid {name}", reason, name))
    return problems


def resolve(
    config: Mapping[str, Any] | None, environ: Mapping[str, str]
) -> tuple[Settings | None, list[Problem], list[str]]:
    """(settings, problems, missing): settings when everything needed is known and valid;
    `missing` names what is neither in the block nor in the environment (an error only once a
    resource needs the control plane; values unknown until apply count as missing too)."""
    config = config or {}
    problems = block_problems(config)
    missing: list[str] = []
    values: dict[str, str] = {}
    for name, env in (("endpoint", ENV_ENDPOINT), ("token", ENV_TOKEN)):
        value = config.get(name)
        if isinstance(value, str):
            values[name] = value
            continue
        if value is not None:  # unknown until apply
            missing.append(f"{name} (not known until apply)")
            continue
        from_env = environ.get(env)
        if from_env is None:
            missing.append(f"{name} (set it in the provider block or ${env})")
        elif name == "endpoint" and (problem := endpoint_problem(from_env)):
            problems.append(
                Problem(
                    f"Invalid ${env}",
                    f"${env} {problem}. The provider block sets no "
                    f"endpoint, so the environment variable is used: fix or unset it, or set "
                    "`endpoint` in the provider block.",
                    None,
                )
            )
        elif not from_env.strip():
            problems.append(
                Problem(
                    f"Empty ${env}",
                    f"${env} is set but empty, and the provider block sets no {name}: give it a "
                    f"value or unset it, or set `{name}` in the provider block.",
                    None,
                )
            )
        else:
            values[name] = from_env
    if problems or missing:
        return None, problems, missing
    timeout = config.get("request_timeout")
    retries = config.get("max_retries")
    ca_file = config.get("ca_file")
    from_block = isinstance(ca_file, str) and bool(ca_file)
    if not from_block:
        ca_file = environ.get(ENV_CA_FILE) or None
    return (
        Settings(
            endpoint=values["endpoint"],
            token=values["token"],
            timeout=float(timeout) if isinstance(timeout, int | float) else DEFAULT_TIMEOUT_SECONDS,
            retries=int(retries) if isinstance(retries, int | float) else DEFAULT_RETRIES,
            ca_file=ca_file,
            ca_file_from_block=from_block,
        ),
        [],
        [],
    )
