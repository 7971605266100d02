"""`wait_for_rollout` without Terraform: durations, when a wait ends, the messages, and the polling
loop on a fake clock. Statuses have the shape of `GET /v1/rollouts/{scope}/{id}` (docs/API.md,
Rollouts); test_fleet_example.py runs the same code against real servers."""

from __future__ import annotations

from typing import Any

import pytest
from tf.utils import Diagnostics

from controlplane.terraform import rollout_wait as rw
from controlplane.terraform.client import ApiError

TDD = "tdd-0a1b"


def server(name: str, progress: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"tds-{name}",
        "name": name,
        "cluster_id": "c-1",
        "progress": progress,
        "state": extra.pop("state", "HEALTHY"),
        "desired_version": 9,
        "applied_version": extra.pop("applied_version", 7),
        "error": extra.pop("error", None),
        "last_contact_at": "2025-01-01T00:00:00+00:00",
        "last_contact_seconds_ago": 3,
        **extra,
    }


def status(phase: str, servers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    counts = {"applied": 1, "refused": 0, "pending": 0, "unreachable": 0}
    for s in servers:
        counts[s["progress"]] += 1
    return {
        "scope": "cluster",
        "id": "c-1",
        "version": 4,
        "current_version": 4,
        "revision": 9,
        "phase": phase,
        "done": phase == "done",
        "counts": {"targeted": sum(counts.values()), **counts},
        "servers": servers,
        "deployments": extra.pop("deployments", []),
        **extra,
    }


def staged(phase: str, reason: str | None = None, number: int = 1) -> dict[str, Any]:
    return {
        "id": TDD,
        "phase": phase,
        "stage": {"index": number - 1, "name": "canary", "number": number, "of": 3},
        "counts": {},
        "bake_seconds_left": None,
        "halt_reason": reason,
    }


# -- durations ----------------------------------------------------------------------------------


def test_timeouts_take_durations_and_name_the_bad_one() -> None:
    assert rw.timeout_seconds(None, "create") == ("10m", 600.0)
    assert rw.timeout_seconds({"create": None, "update": "1h30m"}, "update") == ("1h30m", 5400.0)
    assert rw.timeout_seconds({"create": "45s"}, "create") == ("45s", 45.0)
    assert rw.timeout_problems({"create": "10m", "update": None}) == []
    problems = rw.timeout_problems({"create": "ten minutes", "update": "0s"})
    assert [name for name, _ in problems] == ["create", "update"]
    assert "'ten minutes'" in problems[0][1] and "timeouts.create" in problems[0][1]


def test_a_bad_timeout_is_an_error_at_its_attribute_path() -> None:
    diags = Diagnostics()
    assert rw.check_timeouts(diags, {"timeouts": {"update": "5 minutes"}})
    (diag,) = diags.diagnostics
    assert diag.path == ["timeouts"] and "`timeouts.update`" in diag.detail
    assert not rw.check_timeouts(Diagnostics(), {"timeouts": None})


# -- when a wait ends ---------------------------------------------------------------------------


def test_only_done_refused_halted_and_aborted_end_a_wait() -> None:
    assert rw.finished(status("done", []))
    for phase in ("refused", "halted", "aborted"):
        assert rw.finished(status(phase, [server("a", "refused")]))
    for phase in ("in_progress", "paused", "some-phase-added-later"):
        assert not rw.finished(status(phase, [server("a", "pending")]))


def test_a_refusal_under_a_staged_rollout_waits_for_the_promoters_verdict() -> None:
    held = status("refused", [server("a", "refused")], deployments=[staged("refused")])
    assert not rw.finished(held)  # the promoter halts (or rolls back) it at its next pass
    plain = status("refused", [server("a", "refused")], deployments=[{"id": TDD, "stage": None}])
    assert rw.finished(plain)


# -- messages -----------------------------------------------------------------------------------


def test_a_refusal_names_each_refusing_server_with_its_reason() -> None:
    refused = status(
        "refused",
        [server("b", "refused", error="webhook unreachable"), server("c", "pending")],
    )
    summary, detail = rw.failure(refused) or ("", "")
    assert summary == "Rollout of cluster c-1 version 4 refused by 1 server(s)"
    assert "server b (tds-b) refused it: webhook unreachable" in detail
    assert "tds-c" not in detail  # a pending server did not refuse
    assert "is at version 4, and Terraform's state records it" in detail
    assert rw.failure(status("in_progress", [])) is None
    assert rw.failure(status("done", [])) is None


def test_a_halt_says_the_stage_why_and_the_commands() -> None:
    halted = status(
        "halted",
        [server("a", "refused", error="bad vault")],
        deployments=[staged("halted", reason="server tds-a (a) refused version 9: bad vault")],
    )
    summary, detail = rw.failure(halted) or ("", "")
    assert summary == f"Rollout of cluster c-1 version 4 halted (deployment {TDD})"
    assert f"deployment {TDD} halted at stage 1/3 canary: server tds-a (a) refused" in detail
    for action in ("promote", "resume", "abort"):
        assert f"spirlctl rollout {action} --trust-domain-deployment {TDD}" in detail
    aborted = status("aborted", [], deployments=[staged("aborted", reason="by ops")])
    summary, detail = rw.failure(aborted) or ("", "")
    assert summary.endswith("aborted")
    assert "was aborted at stage 1/3 canary: by ops" in detail
    assert f"spirlctl rollout resume --trust-domain-deployment {TDD}" in detail


def test_a_timeout_names_the_pending_servers_and_the_stage_holding_it() -> None:
    waiting = status(
        "in_progress",
        [server("p", "pending", state="UNKNOWN", applied_version=None)],
        deployments=[staged("paused", number=2)],
    )
    summary, detail = rw.timed_out(waiting, "3s", "update")
    assert summary == "Timed out after 3s waiting for the rollout of cluster c-1 version 4"
    assert "server p (tds-p), UNKNOWN: applied nothing yet, needs 9 or later" in detail
    assert f"Deployment {TDD} holds it back: stage 2/3 canary (paused)" in detail
    assert f"spirlctl rollout resume --trust-domain-deployment {TDD}" in detail
    assert "spirlctl rollout status cluster --id c-1 --version 4" in detail
    assert 'timeouts = { update = "..." }' in detail


def test_long_lists_are_cut() -> None:
    many = [server(f"s{i:02}", "refused", error="no") for i in range(25)]
    _, detail = rw.failure(status("refused", many)) or ("", "")
    assert detail.count("refused it:") == rw.MAX_LISTED_SERVERS
    assert "... and 15 more" in detail


def test_done_with_unreachable_servers_is_a_warning_naming_them() -> None:
    done = status("done", [server("u", "unreachable", state="UNREACHABLE")])
    summary, detail = rw.unreachable_note(done) or ("", "")
    assert "skipped 1 unreachable server(s)" in summary and "server u (tds-u)" in detail
    assert rw.unreachable_note(status("done", [])) is None


# -- the loop -----------------------------------------------------------------------------------


class FakeClient:
    """Answers the rollout route from a script: statuses, or ApiErrors to raise."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str, int]] = []

    def rollout_status(self, scope: str, scope_id: str, version: int) -> dict[str, Any]:
        self.asked.append((scope, scope_id, version))
        answer = self.answers[min(len(self.asked), len(self.answers)) - 1]
        if isinstance(answer, ApiError):
            raise answer
        return dict(answer)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def run(answers: list[Any], timeout: float) -> tuple[Any, str | None, FakeClient, FakeClock]:
    client, clock = FakeClient(answers), FakeClock()
    got, error = rw.wait(
        client,  # type: ignore[arg-type]
        "cluster",
        "c-1",
        4,
        timeout,
        clock=clock,
        sleep=clock.sleep,
    )
    return got, error, client, clock


def test_polls_back_off_to_five_seconds_and_stop_at_the_deadline() -> None:
    pending = status("in_progress", [server("p", "pending")])
    got, error, client, clock = run([pending], timeout=30)
    assert got == pending and error is None
    assert clock.sleeps[:4] == [0.5, 0.75, 1.125, 1.6875]
    assert max(clock.sleeps) == rw.MAX_POLL_SECONDS
    assert clock.now == 30  # never sleeps past the deadline
    assert set(client.asked) == {("cluster", "c-1", 4)}


def test_the_wait_ends_on_done_and_rides_out_an_unreachable_control_plane() -> None:
    unreachable = ApiError(0, "unreachable", "cannot reach the control plane")
    done = status("done", [])
    got, error, client, _ = run([status("in_progress", []), unreachable, done], timeout=60)
    assert got == done and error is None and len(client.asked) == 3
    # An error that is not passing ends the wait at once.
    with pytest.raises(ApiError):
        run([ApiError(403, "forbidden", "the token may not do this")], timeout=60)


def test_wait_after_write_reports_on_the_given_path_and_only_when_asked() -> None:
    refused = status("refused", [server("b", "refused", error="no")])
    diags = Diagnostics()
    client = FakeClient([refused])
    planned = {"wait_for_rollout": True, "timeouts": {"create": "1m"}}
    rw.wait_after_write(
        diags,
        client,
        planned,
        "create",
        "cluster",
        "c-1",
        4,
        ["yaml"],
        "spirl_config_section",  # type: ignore[arg-type]
    )
    (diag,) = diags.diagnostics
    assert diag.path == ["yaml"] and "refused by 1 server(s)" in diag.summary
    assert "terraform untaint spirl_config_section.<name>" in diag.detail  # a failed create
    for planned in ({"wait_for_rollout": False}, {"wait_for_rollout": None}):
        quiet = FakeClient([refused])
        rw.wait_after_write(
            Diagnostics(),
            quiet,
            planned,
            "update",
            "cluster",
            "c-1",
            4,
            ["yaml"],
            "x",  # type: ignore[arg-type]
        )
        assert quiet.asked == []
    # Version 0 (an empty scope stayed empty): nothing was rolled out.
    quiet = FakeClient([refused])
    rw.wait_after_write(
        Diagnostics(),
        quiet,
        {"wait_for_rollout": True},
        "create",
        "cluster",
        "c-1",
        0,
        [],
        "x",  # type: ignore[arg-type]
    )
    assert quiet.asked == []
