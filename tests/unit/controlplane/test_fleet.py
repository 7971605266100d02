"""Fleet rules (pure): server states from reports and silence, retention, rollout progress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controlplane import fleet
from controlplane.delivery.contacts import ContactLog

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=30)
S = timedelta(seconds=1)


def contact(
    *, contact_ago: float | None, report_ago: float | None, health: str = "HEALTHY"
) -> fleet.Contact:
    return fleet.Contact(
        registered_at=NOW - timedelta(days=1),
        last_contact_at=None if contact_ago is None else NOW - contact_ago * S,
        last_report_at=None if report_ago is None else NOW - report_ago * S,
        health=health,
    )


@pytest.mark.parametrize(
    ("contact_ago", "report_ago", "health", "seen_ago", "state"),
    [
        (1, 1, "HEALTHY", None, "HEALTHY"),
        (1, 1, "UNHEALTHY", None, "UNHEALTHY"),
        (30, 30, "HEALTHY", None, "HEALTHY"),  # the window's edge is still in it
        (31, 31, "HEALTHY", None, "UNREACHABLE"),
        (31, 31, "HEALTHY", 2, "UNKNOWN"),  # a poll this process saw: in contact, no report
        (1, 31, "HEALTHY", None, "UNKNOWN"),
        (1, None, "UNKNOWN", None, "UNKNOWN"),  # registered, never reported
        (None, None, "UNKNOWN", None, "UNREACHABLE"),  # registered a day ago, never heard of
        (1, 1, "SOMETHING", None, "UNKNOWN"),
    ],
)
def test_server_state(contact_ago, report_ago, health, seen_ago, state):  # type: ignore[no-untyped-def]
    seen = None if seen_ago is None else NOW - seen_ago * S
    c = contact(contact_ago=contact_ago, report_ago=report_ago, health=health)
    assert fleet.server_state(c, NOW, WINDOW, seen) == state


def test_retention_counts_the_latest_contact_and_can_be_off():
    old = contact(contact_ago=3600, report_ago=3600)
    assert fleet.is_past_retention(old, NOW, timedelta(minutes=30))
    assert not fleet.is_past_retention(old, NOW, timedelta(hours=2))
    assert not fleet.is_past_retention(old, NOW, timedelta(minutes=30), NOW - 10 * S)
    assert not fleet.is_past_retention(old, NOW, None)


def test_policy_derives_its_intervals_and_refuses_nonsense():
    default = fleet.FleetPolicy()
    assert default.stale_after.total_seconds() == 2 * 60 + 15
    assert default.contact_flush_interval == 15 and default.sweep_interval == 60
    small = fleet.FleetPolicy(stale_after=2 * S, retention=4 * S)
    assert small.contact_flush_interval == 0.5 and small.sweep_interval == pytest.approx(0.4)
    assert fleet.FleetPolicy(retention=None).sweep_interval == 0
    with pytest.raises(ValueError, match="longer than zero"):
        fleet.FleetPolicy(stale_after=timedelta(0))
    with pytest.raises(ValueError, match="at least the staleness window"):
        fleet.FleetPolicy(stale_after=60 * S, retention=30 * S)


def server(name: str, state: str = "HEALTHY", **versions: int | None) -> fleet.ServerRollout:
    return fleet.ServerRollout(
        server_id=f"tds-{name}",
        name=name,
        cluster_id=None,
        state=state,
        last_contact_at=NOW,
        desired_version=versions.get("desired"),
        applied_version=versions.get("applied"),
        refused_version=versions.get("refused"),
        error="boom" if versions.get("refused") else None,
    )


def test_progress_of_one_server():
    assert fleet.server_progress(server("a", applied=7), 7) == "applied"
    assert fleet.server_progress(server("a", applied=9), 7) == "applied"  # a later one holds it
    assert fleet.server_progress(server("a", applied=6, refused=7), 7) == "refused"
    assert fleet.server_progress(server("a", applied=6, refused=5), 7) == "pending"  # older NACK
    assert fleet.server_progress(server("a", "UNREACHABLE", applied=6, refused=7), 7) == "refused"
    assert fleet.server_progress(server("a", "UNREACHABLE", applied=9), 7) == "applied"
    assert fleet.server_progress(server("a", "UNREACHABLE", applied=6), 7) == "unreachable"
    assert fleet.server_progress(server("a", "UNKNOWN"), 7) == "pending"


def test_rollout_phases():
    done = fleet.rollout_progress(7, [server("a", applied=7), server("z", "UNREACHABLE")])
    assert done.phase == "done" and done.targeted == 2
    assert done.counts == {"applied": 1, "refused": 0, "pending": 0, "unreachable": 1}
    assert [(s.name, p) for s, p in done.servers] == [("z", "unreachable")]
    going = fleet.rollout_progress(7, [server("b", applied=6), server("a", applied=7)])
    assert going.phase == "in_progress"
    refused = fleet.rollout_progress(
        7, [server("c"), server("b", refused=7), server("a", "UNREACHABLE")]
    )
    assert refused.phase == "refused"  # at once, though c is still pending
    assert [s.name for s, _ in refused.servers] == ["b", "c", "a"]  # refused, pending, unreachable
    assert fleet.rollout_progress(7, []).phase == "done"


def test_contact_log_hands_out_each_contact_once():
    log = ContactLog()
    log.seen("tds-b", NOW)
    log.seen("tds-a", NOW - S)
    log.seen("tds-b", NOW + S)
    assert log.take_unwritten() == [("tds-a", NOW - S), ("tds-b", NOW + S)]
    assert log.take_unwritten() == []
    assert log.snapshot() == {"tds-a": NOW - S, "tds-b": NOW + S}
    log.seen("tds-a", NOW + 2 * S)
    log.forget("tds-a")
    assert log.take_unwritten() == [] and "tds-a" not in log.snapshot()
