"""The console's formatting helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controlplane.console.render import ago, duration, short_error, state_class, when

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_when_and_ago():
    assert when("2025-03-01T13:00:00+01:00") == "2025-03-01 12:00:00Z"
    assert when(None) == when("not a time") == "-"
    assert ago((NOW - timedelta(seconds=4)).isoformat(), NOW) == "4s ago"
    assert ago((NOW - timedelta(minutes=3, seconds=5)).isoformat(), NOW) == "3m ago"
    assert ago((NOW - timedelta(days=2)).isoformat(), NOW) == "2d ago"
    assert ago((NOW + timedelta(seconds=2)).isoformat(), NOW) == "just now"


def test_duration():
    assert [duration(s) for s in (0, 45, 630, -3300, 11100, 190000)] == [
        "0s",
        "45s",
        "10m 30s",
        "55m",
        "3h 5m",
        "2d 4h",
    ]


def test_short_error_keeps_the_first_line_and_fits_a_cell():
    assert short_error(None) == ""
    assert short_error("refused: tier\nat line 2") == "refused: tier"
    long = "Key Vault https://x.vault.azure.net/: " + "x" * 400
    assert len(short_error(long)) == 90 and short_error(long).endswith("…")


def test_any_server_state_gets_a_css_class():
    assert state_class("HEALTHY") == "st-healthy"
    assert state_class("UNREACHABLE") == "st-unreachable"
    assert state_class('"><x') == "st-x"
    assert state_class(None) == "st-unknown"
