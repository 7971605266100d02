"""Provider settings: block and environment merged, every problem naming where the value came from."""

from __future__ import annotations

import pytest
from tf.types import Unknown

from controlplane.terraform.settings import block_problems, endpoint_problem, resolve

pytestmark = pytest.mark.terraform

GOOD = {"SPIRL_ENDPOINT": "http://127.0.0.1:8080", "SPIRL_TOKEN": "t0k"}


def test_block_beats_environment() -> None:
    settings, problems, missing = resolve(
        {"endpoint": "https://cp.example.com/spirl", "token": "b", "request_timeout": 5}, GOOD
    )
    assert problems == [] and missing == []
    assert settings is not None
    assert (settings.endpoint, settings.token, settings.timeout, settings.retries) == (
        "https://cp.example.com/spirl",
        "b",
        5.0,
        3,
    )
    settings, _, _ = resolve({}, GOOD)
    assert settings is not None and settings.endpoint == GOOD["SPIRL_ENDPOINT"]


def test_problems_say_where_the_value_came_from() -> None:
    _, problems, _ = resolve({}, {"SPIRL_ENDPOINT": "127.0.0.1:8080", "SPIRL_TOKEN": ""})
    by_summary = {p.summary: p for p in problems}
    assert by_summary["Invalid $SPIRL_ENDPOINT"].attribute is None  # not the block's fault
    assert "provider block sets no endpoint" in by_summary["Invalid $SPIRL_ENDPOINT"].detail
    assert by_summary["Empty $SPIRL_TOKEN"].attribute is None
    _, problems, _ = resolve({"endpoint": "ftp://x", "token": ""}, GOOD)
    assert {(p.summary, p.attribute) for p in problems} == {
        ("Invalid endpoint", "endpoint"),
        ("Empty token", "token"),
    }


def test_missing_and_unknown_are_not_errors_yet() -> None:
    settings, problems, missing = resolve({"endpoint": Unknown}, {})
    assert settings is None and problems == []
    assert missing == [
        "endpoint (not known until apply)",
        "token (set it in the provider block or $SPIRL_TOKEN)",
    ]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "is empty"),
        ("127.0.0.1:8080", "must be an http:// or https:// URL"),
        ("http://", "has no host"),
        ("http://user:pw@cp:8080", "user info"),
        ("http://cp:8080/?x=1", "query or fragment"),
        ("http://cp:99999", "not a valid URL"),
        ("http://cp :8080", "spaces"),
    ],
)
def test_endpoint_rules(value: str, reason: str) -> None:
    problem = endpoint_problem(value)
    assert problem is not None and reason in problem
    assert "pw" not in problem  # never echo credentials


def test_numbers() -> None:
    assert block_problems({"request_timeout": 0.5, "max_retries": 2.5})[0].attribute == (
        "request_timeout"
    )
    assert [p.attribute for p in block_problems({"max_retries": 11})] == ["max_retries"]
    assert block_problems({"request_timeout": 600, "max_retries": 0}) == []


def test_ca_file_from_the_block_or_the_environment() -> None:
    settings, _, _ = resolve(
        {"ca_file": "/etc/spirl/ca.pem"}, {**GOOD, "SPIRL_CA_FILE": "/env.pem"}
    )
    assert settings is not None
    assert (settings.ca_file, settings.ca_file_from_block) == ("/etc/spirl/ca.pem", True)
    settings, _, _ = resolve({}, {**GOOD, "SPIRL_CA_FILE": "/env.pem"})
    assert settings is not None
    assert (settings.ca_file, settings.ca_file_from_block) == ("/env.pem", False)
    settings, _, _ = resolve({}, GOOD)
    assert settings is not None and settings.ca_file is None


def test_plain_http_to_another_host_is_a_warning() -> None:
    """The provider warns as spirlctl and spirl-tds do (docs: `http://` only on loopback)."""
    from tf.utils import Diagnostics

    from controlplane.terraform.provider import SpirlProvider

    for endpoint, warned in (
        ("http://cp.example.org:8080", True),
        ("http://127.0.0.1:8080", False),
        ("https://cp.example.org:8443", False),
    ):
        diags = Diagnostics()
        SpirlProvider().configure_provider(diags, {"endpoint": endpoint, "token": "t0k"})
        assert [d.severity for d in diags.diagnostics] == (["warning"] if warned else []), endpoint


def test_values_the_provider_copies_from_the_server_match_it() -> None:
    """The provider must not import the server package, so it keeps copies; they must agree."""
    from controlplane.api import identity
    from controlplane.terraform import client

    assert client.API_VERSION_HEADER == identity.API_VERSION_HEADER
    assert identity.API_VERSION in client.KNOWN_API_VERSIONS
