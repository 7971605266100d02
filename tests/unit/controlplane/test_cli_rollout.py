"""spirlctl waiting for a rollout: progress lines, outcome, exit codes (fake client and clock)."""

from __future__ import annotations

import argparse
import io
from typing import Any

import pytest

from controlplane.cli import rollout
from controlplane.cli.args import seconds
from controlplane.cli.output import ago, one_line


def status(phase: str, applied: int, pending: int = 0, **more: Any) -> dict[str, Any]:
    counts = {"applied": applied, "refused": 0, "pending": pending, "unreachable": 0}
    counts.update(more.pop("counts", {}))
    return {
        "scope": "cluster",
        "id": "c-1",
        "version": 4,
        "current_version": 4,
        "revision": 40,
        "phase": phase,
        "counts": {"targeted": sum(counts.values()), **counts},
        "servers": more.pop("servers", []),
    }


class FakeClient:
    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.replies = replies
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        self.calls.append((path, params))
        return self.replies[min(len(self.calls), len(self.replies)) - 1]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_summary_names_only_what_is_there():
    assert rollout.summary(status("in_progress", 2, 1)) == "2/3 applied, 1 pending"
    assert (
        rollout.summary(status("refused", 1, counts={"refused": 1, "unreachable": 1}))
        == "1/3 applied, 1 refused, 1 unreachable"
    )
    assert rollout.summary(status("done", 0)) == "0/0 applied (no server is targeted)"


def test_waits_until_done_printing_a_line_per_change():
    replies = [status("in_progress", 0, 3)] * 2 + [status("in_progress", 2, 1), status("done", 3)]
    client, clock, out = FakeClient(replies), Clock(), io.StringIO()
    final = rollout.wait_for_rollout(
        client,  # type: ignore[arg-type]
        "cluster",
        "c-1",
        None,
        60,
        rollout.Progress(out),
        clock=clock,
        sleep=clock.sleep,
    )
    assert final["phase"] == "done" and len(client.calls) == 4
    assert client.calls[0] == ("/v1/rollouts/cluster/c-1", {"version": None})
    assert client.calls[1][1] == {"version": 4}  # the version the first answer named
    assert out.getvalue().splitlines() == [
        "rollout of cluster c-1 version 4: 0/3 applied, 3 pending",
        "rollout of cluster c-1 version 4: 2/3 applied, 1 pending",
        "rollout of cluster c-1 version 4: 3/3 applied",
    ]


def test_on_a_terminal_one_line_is_rewritten():
    replies = [status("in_progress", 0, 2), status("done", 2)]
    client, clock, out = FakeClient(replies), Clock(), Terminal()
    progress = rollout.Progress(out)
    rollout.wait_for_rollout(
        client, "cluster", "c-1", 4, 60, progress, clock=clock, sleep=clock.sleep
    )  # type: ignore[arg-type]
    line = "\r\x1b[Krollout of cluster c-1 version 4: "
    assert out.getvalue() == f"{line}0/2 applied, 2 pending{line}2/2 applied\n"


def test_stops_at_the_timeout_and_says_what_is_pending():
    pending = {
        "id": "tds-b",
        "name": "b",
        "progress": "pending",
        "state": "HEALTHY",
        "applied_version": 39,
        "error": None,
    }
    client, clock = FakeClient([status("in_progress", 1, 1, servers=[pending])]), Clock()
    final = rollout.wait_for_rollout(
        client, "cluster", "c-1", 4, 5, None, clock=clock, sleep=clock.sleep
    )  # type: ignore[arg-type]
    assert clock.now == 5 and len(client.calls) == 11  # every 0.5 s, and once at the end
    out, err = io.StringIO(), io.StringIO()
    assert rollout.report(final, 5, out, err) == rollout.EXIT_TIMEOUT == 4
    assert err.getvalue().splitlines() == [
        "timed out after 5s waiting for cluster c-1 version 4: 1/2 applied, 1 pending",
        "  pending on tds-b (b) (HEALTHY): applied 39, needs 40 or later",
    ]


def test_a_refusal_ends_the_wait_with_each_refusing_servers_error():
    refusal = {"id": "tds-a", "name": "a", "progress": "refused", "state": "UNHEALTHY"}
    final = status(
        "refused",
        1,
        1,
        counts={"refused": 1},
        servers=[{**refusal, "error": "config version 40 not applied: no"}],
    )
    out, err = io.StringIO(), io.StringIO()
    assert rollout.report(final, 60, out, err) == rollout.EXIT_REFUSED == 3
    assert "refused by tds-a (a): config version 40 not applied: no" in err.getvalue()


def test_done_mentions_skipped_unreachable_servers_and_a_newer_version():
    gone = {"id": "tds-z", "name": "z", "progress": "unreachable", "last_contact_seconds_ago": 400}
    final = status("done", 2, counts={"unreachable": 1}, servers=[gone]) | {"current_version": 5}
    out = io.StringIO()
    assert rollout.report(final, 60, out, io.StringIO()) == 0
    text = out.getvalue()
    assert "complete: 2/3 applied, 1 unreachable" in text
    assert "skipped tds-z (z): unreachable, last contact 6m40s ago" in text
    assert "now at version 5" in text


def test_durations_and_table_helpers():
    assert [seconds(t) for t in ("0", "90", "0.5", "90s", "5m", "1h30m")] == [
        0,
        90,
        0.5,
        90,
        300,
        5400,
    ]
    with pytest.raises(argparse.ArgumentTypeError):
        seconds("soon")
    assert one_line("a\n   b") == "a b" and one_line(None) is None
    assert len(one_line("x" * 500) or "") == 60
    assert ago(0) == "0s ago" and ago(3725) == "1h2m ago" and ago(None) == "-"


# -- staged rollouts ------------------------------------------------------------------------------


def staged(phase: str, **fields: Any) -> dict[str, Any]:
    counts = {"servers": 4, "applied": 1, "refused": 0, "pending": 3, "unreachable": 0}
    stages = [
        {
            "index": 0,
            "name": "canary",
            "select": {"servers": 1},
            "bake_seconds": 600,
            "state": "current",
            "counts": {**counts, "servers": 1, "pending": 0, "unhealthy": 0},
        },
        {
            "index": 1,
            "name": "all",
            "select": {"all": True},
            "bake_seconds": 0,
            "state": "pending",
            "counts": {**counts, "servers": 3, "applied": 0, "unhealthy": 0},
        },
    ]
    return {
        "trust_domain_deployment_id": "tdd-1",
        "name": "prod",
        "phase": phase,
        "stage": {"index": 0, "name": "canary", "number": 1, "of": 2},
        "bake_seconds_left": 500.0,
        "waiting_for": "baking",
        "halt": None,
        "changes": [{"scope": "cluster", "id": "c-1", "from_version": 2, "to_version": 3}],
        "stages": stages,
        "counts": counts,
        **fields,
    }


def test_a_versions_progress_names_the_stage_of_each_staged_deployment():
    held = {
        "id": "tdd-1",
        "phase": "in_progress",
        "stage": {"index": 0, "name": "canary", "number": 1, "of": 3},
        "bake_seconds_left": 500.0,
    }
    halted = {**held, "id": "tdd-2", "phase": "halted", "bake_seconds_left": None}
    plain = {"id": "tdd-3", "phase": "done", "stage": None}
    line = rollout.summary(status("in_progress", 1, 3) | {"deployments": [held, halted, plain]})
    assert line == (
        "1/4 applied, 3 pending; tdd-1 stage 1/3 canary (baking, 8m20s left); "
        "tdd-2 stage 1/3 canary (halted)"
    )


def test_halted_and_aborted_end_a_wait_with_the_reason_and_unknown_phases_do_not():
    replies = [status("paused", 0, 3), status("something-new", 0, 3), status("halted", 0, 3)]
    client, clock = FakeClient(replies), Clock()
    final = rollout.wait_for_rollout(
        client, "cluster", "c-1", 4, 60, None, clock=clock, sleep=clock.sleep
    )  # type: ignore[arg-type]
    assert final["phase"] == "halted" and len(client.calls) == 3
    final["deployments"] = [
        {"id": "tdd-1", "phase": "halted", "stage": None, "halt_reason": "server a refused"}
    ]
    err = io.StringIO()
    assert rollout.report(final, 60, io.StringIO(), err) == rollout.EXIT_REFUSED
    assert "halted in tdd-1: server a refused" in err.getvalue()
    assert rollout.exit_code(status("aborted", 0)) == rollout.EXIT_REFUSED


def test_a_deployments_rollout_is_followed_until_it_stops_then_shown_stage_by_stage():
    replies = [staged("in_progress"), staged("halted", halt={"reason": "server a refused"})]
    client, clock, out = FakeClient(replies), Clock(), io.StringIO()
    final = rollout.wait_for_deployment(
        client, "tdd-1", 60, rollout.Progress(out), clock=clock, sleep=clock.sleep
    )  # type: ignore[arg-type]
    assert client.calls[0] == ("/v1/trust-domain-deployments/tdd-1/rollout", {})
    assert out.getvalue().splitlines()[0] == (
        "rollout of deployment tdd-1 (prod): stage 1/2 canary (baking, 8m20s left): 1/4 applied"
    )
    report, err = io.StringIO(), io.StringIO()
    assert rollout.report_deployment(final, 60, report, err) == rollout.EXIT_REFUSED
    lines = report.getvalue().splitlines()
    assert lines[1] == "  changes cluster c-1: version 2 -> 3"
    assert lines[2].split() == rollout.STAGE_HEADERS
    assert lines[3].split() == [
        "canary",
        "1",
        "server(s)",
        "10m",
        "current",
        "1",
        "1",
        "0",
        "0",
        "0",
    ]
    assert lines[4].split()[:4] == ["all", "every", "server", "-"]
    assert err.getvalue() == "rollout halted: server a refused\n"
    none = {"trust_domain_deployment_id": "tdd-1", "name": "prod", "phase": "none"}
    assert rollout.report_deployment(none, 0, report, err) == rollout.EXIT_DONE
    assert "no rollout policy" in rollout.deployment_line(none)
