"""The pure rules of staged rollouts: who each stage admits, who receives what, and the gate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controlplane import rollouts
from controlplane.fleet import HEALTHY, UNHEALTHY, UNKNOWN, UNREACHABLE, ServerRollout
from controlplane.rollouts import (
    Candidate,
    DeliveryPins,
    Member,
    Policy,
    RolloutState,
    Stage,
    enter_stage,
    judge,
    selection,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MIN = timedelta(minutes=1)


def candidates(*names: str, cluster: str | None = None, reachable: bool = True) -> list[Candidate]:
    """Servers registered a minute apart, in the order given."""
    return [Candidate(n, cluster, T0 + i * MIN, reachable) for i, n in enumerate(names)]


def policy(*stages: Stage, on_failure: str = "halt") -> Policy:
    return Policy(tuple(stages), on_failure)


CANARY_HALF = policy(
    Stage("canary", servers=1, bake=10 * MIN), Stage("half", percent=50, bake=5 * MIN)
)


def test_policy_from_a_validated_spec():
    spec = {
        "stages": [
            {"name": "canary", "servers": 1, "bake": "10m"},
            {"clusters": ["c-1", "c-2"]},
            {"percent": 25, "bake": "1h30m"},
        ],
        "onFailure": "rollback",
    }
    p = rollouts.policy_from_spec(spec)
    assert p.stages == (
        Stage("canary", servers=1, bake=10 * MIN),
        Stage("stage 2", clusters=("c-1", "c-2")),
        Stage("stage 3", percent=25, bake=90 * MIN),
    )
    assert p.on_failure == "rollback" and p.final == 3
    assert [p.stage_name(i) for i in range(4)] == ["canary", "stage 2", "stage 3", "all"]
    assert rollouts.policy_from_spec({"stages": [{"servers": 2}]}).on_failure == "halt"


def test_count_and_percent_stages_take_the_oldest_reachable_servers_cumulatively():
    servers = candidates("d", "a", "c", "b")  # registered in this order
    assert selection(CANARY_HALF, 0, servers) == {"d"}
    assert selection(CANARY_HALF, 1, servers) == {"d", "a"}
    assert selection(CANARY_HALF, 2, servers) == {"a", "b", "c", "d"}  # final: everyone
    # Rounded up: 50 % of 3 is 2; 1 % of anything is at least one.
    assert selection(CANARY_HALF, 1, servers[:3]) == {"d", "a"}
    assert selection(policy(Stage("x", percent=1)), 0, servers) == {"d"}
    # The same registration time: the id decides, so every replica agrees.
    tied = [Candidate(n, None, T0) for n in ("s2", "s1")]
    assert selection(CANARY_HALF, 0, tied) == {"s1"}
    # A silent server is never a canary; it still gets the change at the final stage.
    silent = [Candidate("old", None, T0 - MIN, reachable=False), *servers]
    assert selection(CANARY_HALF, 0, silent) == {"d"}
    assert "old" in selection(CANARY_HALF, 2, silent)


def test_cluster_stages_take_every_reachable_server_of_their_clusters():
    east = candidates("e1", "e2", cluster="c-east")
    west = [
        *candidates("w1", cluster="c-west", reachable=False),
        Candidate("w2", "c-west", T0 + 5 * MIN),
    ]
    p = policy(Stage("west", clusters=("c-west",)), Stage("one more", servers=1))
    assert selection(p, 0, east + west) == {"w2"}  # like count and percent stages
    assert selection(p, 1, east + west) == {"w2", "e1"}
    assert selection(p, 2, east + west) == {"e1", "e2", "w1", "w2"}  # the final stage: all


def test_entering_a_stage_passes_stages_that_admit_nobody_new():
    servers = candidates("a", "b")
    # half of two is the canary again: stage 1 is passed, the final stage admits everyone.
    assert enter_stage(CANARY_HALF, 0, servers, frozenset()) == (0, {"a"})
    assert enter_stage(CANARY_HALF, 1, servers, frozenset({"a"})) == (2, None)
    empty_cluster = policy(Stage("nobody", clusters=("c-empty",)), Stage("canary", servers=1))
    assert enter_stage(empty_cluster, 0, servers, frozenset()) == (1, {"a"})
    assert enter_stage(CANARY_HALF, 0, [], frozenset()) == (2, None)
    # Those admitted before stay admitted, even when the selection no longer picks them.
    assert enter_stage(CANARY_HALF, 1, candidates("x", "y", "z", "w"), frozenset({"a"})) == (
        1,
        {"a", "x", "y"},
    )


def test_who_receives_the_target():
    assert rollouts.receives_target(rollouts.ACTIVE, frozenset({"a"}), "a")
    assert not rollouts.receives_target(rollouts.ACTIVE, frozenset({"a"}), "b")
    assert rollouts.receives_target(rollouts.HALTED, None, "b")  # the final stage
    assert not rollouts.receives_target(rollouts.ABORTED, None, "a")
    pins = DeliveryPins(3, rollouts.PAUSED, frozenset({"a"}), {"k": 1}, {"k": 2})
    assert pins.for_server("a") == (True, {"k": 2})
    assert pins.for_server("b") == (False, {"k": 1})


def test_pinned_versions_are_the_largest_revision_of_a_servers_layers():
    layers = rollouts.layer_keys("td-1", "tdd-1", "c-1")
    assert layers == ["trust-domain/td-1", "trust-domain-deployment/tdd-1", "cluster/c-1"]
    assert rollouts.layer_keys("td-1", "tdd-1", None)[-1] == "trust-domain-deployment/tdd-1"
    pins = {"trust-domain/td-1": 4, "cluster/c-1": 9, "cluster/c-2": 12}
    assert rollouts.pinned_version(pins, layers) == 9
    assert rollouts.pinned_version({}, layers) == 0


def member(
    name: str,
    *,
    applied: int | None = 10,
    refused: int | None = None,
    state: str = HEALTHY,
    minute: int = 0,
    target: int = 20,
    stable: int = 10,
    error: str | None = None,
) -> Member:
    server = ServerRollout(name, name, None, state, T0, applied, applied, refused, error)
    return Member(server, T0 + minute * MIN, stable, target)


def state(stage: int = 0, admitted: set[str] | None = None, **more: object) -> RolloutState:
    return RolloutState(
        str(more.get("status", rollouts.ACTIVE)),
        stage,
        frozenset(admitted) if admitted is not None else None,
        more.get("ready_at"),  # type: ignore[arg-type]
        frozenset(more.get("accepted", ())),  # type: ignore[call-overload]
    )


def test_the_gate_waits_for_every_admitted_server_then_bakes_then_advances():
    fleet = [member("a"), member("b", minute=1)]
    canary = state(admitted={"a"})
    assert judge(CANARY_HALF, canary, fleet, T0).action == rollouts.WAIT
    fleet[0] = member("a", applied=20, state=UNKNOWN)  # applied, no recent report yet
    assert judge(CANARY_HALF, canary, fleet, T0).action == rollouts.WAIT
    fleet[0] = member("a", applied=20)
    assert judge(CANARY_HALF, canary, fleet, T0).action == rollouts.READY
    baking = state(admitted={"a"}, ready_at=T0)
    assert judge(CANARY_HALF, baking, fleet, T0 + 9 * MIN).reason == "baking"
    assert rollouts.bake_left(CANARY_HALF, baking, T0 + 9 * MIN) == MIN
    verdict = judge(CANARY_HALF, baking, fleet, T0 + 10 * MIN)
    assert verdict.action == rollouts.ADVANCE and "canary" in verdict.reason
    assert rollouts.bake_left(CANARY_HALF, canary, T0) is None  # not started


def test_the_final_stage_completes_when_every_reachable_server_applied_it():
    final = state(stage=2, admitted=None)
    fleet = [member("a", applied=20), member("b"), member("gone", state=UNREACHABLE)]
    assert judge(CANARY_HALF, final, fleet, T0).action == rollouts.WAIT
    fleet[1] = member("b", applied=21)  # a later version includes this one
    assert judge(CANARY_HALF, final, fleet, T0).action == rollouts.COMPLETE_NOW
    # Servers the change does not reach are not waited for.
    untouched = member("other", applied=5, stable=5, target=5)
    assert judge(CANARY_HALF, final, [*fleet, untouched], T0).action == rollouts.COMPLETE_NOW


def test_a_refusal_or_unhealthy_after_applying_fails_the_rollout():
    canary = state(admitted={"a"})
    refused = member("a", applied=10, refused=20, state=UNHEALTHY, error="vault says no")
    verdict = judge(CANARY_HALF, canary, [refused], T0)
    assert verdict.action == rollouts.FAIL and verdict.server_id == "a"
    assert verdict.reason == "server a (a) refused version 20: vault says no"
    sick = member("a", applied=20, state=UNHEALTHY, error="create key: 403")
    assert judge(CANARY_HALF, canary, [sick], T0).reason == (
        "server a (a) is UNHEALTHY after applying version 20: create key: 403"
    )
    # Not the change's fault: UNHEALTHY before applying it, a refusal of an older version,
    # or a failure of a server not given the change.
    assert judge(CANARY_HALF, canary, [member("a", state=UNHEALTHY)], T0).action == "wait"
    old_refusal = member("a", applied=10, refused=15, state=UNHEALTHY)
    assert judge(CANARY_HALF, canary, [old_refusal], T0).action == "wait"
    other = member("b", applied=10, refused=20, state=UNHEALTHY)
    assert judge(CANARY_HALF, canary, [member("a", applied=20), other], T0).action == "ready"
    # A paused rollout does not advance, but a failure still halts it.
    paused = state(admitted={"a"}, status=rollouts.PAUSED, ready_at=T0 - timedelta(hours=1))
    assert judge(CANARY_HALF, paused, [member("a", applied=20)], T0).action == "wait"
    assert judge(CANARY_HALF, paused, [refused], T0).action == "fail"


def test_unreachable_and_accepted_servers_do_not_hold_the_gate():
    fleet = [member("a", applied=20), member("b", state=UNREACHABLE, minute=1)]
    assert judge(CANARY_HALF, state(admitted={"a", "b"}), fleet, T0).action == "ready"
    # No admitted server is reachable: the stage selects again among the reachable ones.
    gone = judge(CANARY_HALF, state(admitted={"b"}), fleet, T0)
    assert gone.action == rollouts.RESELECT
    nobody = judge(CANARY_HALF, state(admitted={"b"}), fleet[1:], T0)
    assert nobody.action == "wait" and "no reachable server" in nobody.reason
    # A server admitted already (here: its failure accepted) is not one to select again.
    accepted_c = state(admitted={"b", "c"}, accepted={"c"})
    assert judge(CANARY_HALF, accepted_c, [fleet[1], member("c")], T0).action == "wait"
    refusing = member("a", applied=10, refused=20, state=UNHEALTHY)
    accepted = state(stage=1, admitted={"a", "c"}, accepted={"a"})
    assert judge(CANARY_HALF, accepted, [refusing, member("c", applied=20)], T0).action == ("ready")


@pytest.mark.parametrize("status", rollouts.STATUSES)
def test_every_status_has_a_phase_and_actions_name_real_statuses(status: str) -> None:
    assert rollouts.phase_of(status) in rollouts.PHASES
    for allowed in rollouts.ACTIONS.values():
        assert set(allowed) <= set(rollouts.STATUSES)
