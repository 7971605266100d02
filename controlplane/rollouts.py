"""Staged rollouts, pure: who receives a deployment's new config, and when a stage may end.

No I/O: the services read rows, servers and the clock; these functions decide.

A deployment with a `Rollout` policy (a config section at its own scope) has one rollout state.
Its config has two pinned versions, each a revision per layer (trust domain, deployment, each
cluster): **stable**, the last config every server was given, and **target**, the newest. A
server receives the target once its stage admits it, else the stable config. A server is
*targeted* when the two differ for its layers; stable and target never differ for the others.

Stages are cumulative: stage i admits every targeted server that stages 0..i select; after the
last listed stage the implicit final stage admits everyone. Count and percentage stages take the
oldest reachable targeted servers first (registration time, then id), so a deployment's
canaries stay the same servers from one rollout to the next and servers that join later come
last; a cluster stage takes every reachable targeted server of its clusters. A stage that would
admit nobody new is passed at once.

The gate of a stage: every reachable admitted server applied the target and reports HEALTHY
(at least one such server), then the stage's bake time passes. When no admitted server of the
stage is reachable (its canary was deregistered or went silent) but other targeted servers are,
the stage selects again among the reachable ones (those admitted stay admitted). A refusal (NACK), or an admitted
server that reports UNHEALTHY after applying the target, fails the rollout: it halts, or with
`onFailure: rollback` every server returns to the stable config. The final stage completes
when every reachable targeted server applied the target; the target becomes the stable config.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from controlplane.domain import CLUSTER, DEPLOYMENT, TRUST_DOMAIN, effective_version
from controlplane.fleet import HEALTHY, UNHEALTHY, UNREACHABLE, ServerRollout

SECTION = "Rollout"
ON_FAILURE_HALT = "halt"
ON_FAILURE_ROLLBACK = "rollback"
FINAL_STAGE_NAME = "all"

# The stored status of a deployment's rollout.
ACTIVE = "active"
PAUSED = "paused"
HALTED = "halted"
ABORTED = "aborted"
COMPLETE = "complete"
STATUSES = (ACTIVE, PAUSED, HALTED, ABORTED, COMPLETE)

# What a deployment's rollout looks like from outside (the API's `phase`).
PHASE_NONE = "none"  # no policy: changes reach every server at once
PHASE_IN_PROGRESS = "in_progress"
PHASE_PAUSED = "paused"
PHASE_HALTED = "halted"
PHASE_ABORTED = "aborted"
PHASE_DONE = "done"
PHASES = (PHASE_NONE, PHASE_IN_PROGRESS, PHASE_PAUSED, PHASE_HALTED, PHASE_ABORTED, PHASE_DONE)
_PHASE_OF_STATUS = {
    ACTIVE: PHASE_IN_PROGRESS,
    PAUSED: PHASE_PAUSED,
    HALTED: PHASE_HALTED,
    ABORTED: PHASE_ABORTED,
    COMPLETE: PHASE_DONE,
}

# What an operator may do, and from which statuses.
PROMOTE = "promote"
PAUSE = "pause"
RESUME = "resume"
ABORT = "abort"
ACTIONS: dict[str, tuple[str, ...]] = {
    PROMOTE: (ACTIVE, PAUSED, HALTED),
    PAUSE: (ACTIVE,),
    RESUME: (PAUSED, HALTED, ABORTED),
    ABORT: (ACTIVE, PAUSED, HALTED),
}

Pins = Mapping[str, int]  # "scope/id" -> revision of that layer's config (absent: none)


def pin_key(scope: str, scope_id: str) -> str:
    return f"{scope}/{scope_id}"


def layer_keys(trust_domain_id: str, deployment_id: str, cluster_id: str | None) -> list[str]:
    """The layers of a server's effective config, least specific first."""
    keys = [pin_key(TRUST_DOMAIN, trust_domain_id), pin_key(DEPLOYMENT, deployment_id)]
    if cluster_id:
        keys.append(pin_key(CLUSTER, cluster_id))
    return keys


def pinned_version(pins: Pins, layers: Iterable[str]) -> int:
    """The effective version a server with these layers runs under `pins`."""
    return effective_version(pins.get(key, 0) for key in layers)


def phase_of(status: str) -> str:
    return _PHASE_OF_STATUS[status]


# -- the policy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """Exactly one of `servers`, `percent`, `clusters` selects; `bake` follows the gate."""

    name: str
    servers: int | None = None
    percent: int | None = None
    clusters: tuple[str, ...] | None = None
    bake: timedelta = timedelta(0)

    def describe(self) -> dict[str, Any]:
        if self.clusters is not None:
            return {"clusters": list(self.clusters)}
        if self.servers is not None:
            return {"servers": self.servers}
        return {"percent": self.percent}


@dataclass(frozen=True)
class Policy:
    stages: tuple[Stage, ...]
    on_failure: str = ON_FAILURE_HALT

    @property
    def final(self) -> int:
        """Index of the implicit final stage (every server)."""
        return len(self.stages)

    def stage_name(self, index: int) -> str:
        return self.stages[index].name if index < self.final else FINAL_STAGE_NAME

    def bake(self, index: int) -> timedelta:
        return self.stages[index].bake if index < self.final else timedelta(0)


def policy_from_spec(spec: Mapping[str, Any]) -> Policy:
    """A policy from a validated `Rollout` v1 spec (documents/rules.py checked it)."""
    from controlplane.documents.durations import parse_duration

    stages = []
    for index, raw in enumerate(spec["stages"]):
        clusters = raw.get("clusters")
        stages.append(
            Stage(
                name=str(raw.get("name") or f"stage {index + 1}"),
                servers=raw.get("servers"),
                percent=raw.get("percent"),
                clusters=tuple(clusters) if clusters is not None else None,
                bake=parse_duration(raw["bake"]) if raw.get("bake") else timedelta(0),
            )
        )
    return Policy(tuple(stages), str(spec.get("onFailure", ON_FAILURE_HALT)))


# -- who receives what -------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A targeted server as stage selection sees it."""

    server_id: str
    cluster_id: str | None
    registered_at: datetime
    reachable: bool = True


def _oldest_first(candidates: Iterable[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (c.registered_at, c.server_id))


def selection(policy: Policy, index: int, targeted: Sequence[Candidate]) -> frozenset[str]:
    """The targeted servers that stages 0..index select (the final stage: all of them)."""
    if index >= policy.final:
        return frozenset(c.server_id for c in targeted)
    ordered = _oldest_first(c for c in targeted if c.reachable)
    chosen: set[str] = set()
    for stage in policy.stages[: index + 1]:
        if stage.clusters is not None:
            wanted = set(stage.clusters)
            chosen.update(c.server_id for c in ordered if c.cluster_id in wanted)
        else:
            count = stage.servers
            if count is None:
                count = math.ceil(len(ordered) * (stage.percent or 0) / 100)
            chosen.update(c.server_id for c in ordered[:count])
    return frozenset(chosen)


def enter_stage(
    policy: Policy, index: int, targeted: Sequence[Candidate], admitted: frozenset[str]
) -> tuple[int, frozenset[str] | None]:
    """The first stage from `index` on that admits a server not admitted yet, and everyone it
    admits (with those admitted before). (final, None) when no listed stage adds anyone."""
    while index < policy.final:
        chosen = selection(policy, index, targeted) | admitted
        if chosen - admitted:
            return index, chosen
        index += 1
    return policy.final, None


def receives_target(status: str, admitted: frozenset[str] | None, server_id: str) -> bool:
    """Whether a server is given the target config (else the stable one).

    `admitted` None: the final stage (everyone). Aborted: everyone returns to stable.
    """
    if status == ABORTED:
        return False
    return admitted is None or server_id in admitted


# -- the gate --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """A server of the deployment as the gate sees it."""

    server: ServerRollout
    registered_at: datetime
    stable_version: int
    target_version: int

    @property
    def targeted(self) -> bool:
        return self.target_version != self.stable_version

    @property
    def applied(self) -> bool:
        applied = self.server.applied_version
        return applied is not None and applied >= self.target_version

    def failure(self) -> str | None:
        """Why this server fails the rollout, or None."""
        s = self.server
        who = f"server {s.server_id} ({s.name})"
        error = f": {s.error}" if s.error else ""
        refused = s.refused_version
        if not self.applied and refused is not None and refused >= self.target_version:
            return f"{who} refused version {self.target_version}{error}"
        if self.applied and s.state == UNHEALTHY:
            return f"{who} is UNHEALTHY after applying version {self.target_version}{error}"
        return None

    def candidate(self) -> Candidate:
        s = self.server
        return Candidate(s.server_id, s.cluster_id, self.registered_at, s.state != UNREACHABLE)


@dataclass(frozen=True)
class RolloutState:
    """What the gate needs of a stored rollout."""

    status: str
    stage: int
    admitted: frozenset[str] | None
    ready_at: datetime | None
    # Servers whose failure an operator accepted (promoted past a halt): the gate ignores them.
    accepted: frozenset[str] = frozenset()


WAIT = "wait"
READY = "ready"  # every reachable admitted server is on the target and HEALTHY: bake starts
RESELECT = "reselect"  # no admitted server of the stage is reachable: select it again
ADVANCE = "advance"
COMPLETE_NOW = "complete"
FAIL = "fail"


@dataclass(frozen=True)
class Verdict:
    action: str
    reason: str = ""
    server_id: str | None = None


@dataclass(frozen=True)
class StageProgress:
    """Counts over the admitted targeted servers of the current stage."""

    receiving: int = 0
    applied: int = 0
    healthy: int = 0
    unreachable: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (server id, reason)


def receiving(state: RolloutState, members: Iterable[Member]) -> list[Member]:
    """The targeted servers that are given the target now and that the gate watches."""
    return [
        m
        for m in members
        if m.targeted
        and receives_target(state.status, state.admitted, m.server.server_id)
        and m.server.server_id not in state.accepted
    ]


def stage_progress(state: RolloutState, members: Iterable[Member]) -> StageProgress:
    given = receiving(state, members)
    return StageProgress(
        receiving=len(given),
        applied=sum(1 for m in given if m.applied),
        healthy=sum(1 for m in given if m.applied and m.server.state == HEALTHY),
        unreachable=sum(1 for m in given if m.server.state == UNREACHABLE),
        failures=[(m.server.server_id, r) for m in given if (r := m.failure()) is not None],
    )


def judge(policy: Policy, state: RolloutState, members: Sequence[Member], now: datetime) -> Verdict:
    """What the promoter does next with an active or paused rollout."""
    progress = stage_progress(state, members)
    if progress.failures:
        server_id, reason = progress.failures[0]
        return Verdict(FAIL, reason, server_id)
    if state.status != ACTIVE:
        return Verdict(WAIT, "paused")
    reachable = progress.receiving - progress.unreachable
    if state.stage >= policy.final:
        if progress.applied < reachable:
            return Verdict(WAIT, f"{reachable - progress.applied} server(s) still to apply it")
        return Verdict(COMPLETE_NOW, "every reachable server applied it")
    if reachable == 0:
        if any(
            m.targeted
            and m.server.state != UNREACHABLE
            and not receives_target(state.status, state.admitted, m.server.server_id)
            for m in members
        ):
            return Verdict(RESELECT, "no server of this stage is reachable: selecting it again")
        return Verdict(WAIT, "no reachable server in this stage")
    if progress.healthy < reachable:
        return Verdict(
            WAIT,
            f"{reachable - progress.healthy} of {reachable} server(s) still to apply it and "
            "report HEALTHY",
        )
    if state.ready_at is None:
        return Verdict(READY, "every server of the stage applied it and is HEALTHY")
    bake = policy.bake(state.stage)
    if now - state.ready_at >= bake:
        return Verdict(ADVANCE, f"stage {policy.stage_name(state.stage)} passed its gate")
    return Verdict(WAIT, "baking")


def bake_left(policy: Policy, state: RolloutState, now: datetime) -> timedelta | None:
    """Bake time still to pass in the current stage (None: the bake has not started)."""
    if state.ready_at is None or state.stage >= policy.final:
        return None
    return max(timedelta(0), policy.bake(state.stage) - (now - state.ready_at))


@dataclass(frozen=True)
class DeliveryPins:
    """What a delivery cache keeps of a deployment's rollout: enough to give every server its
    config without a database read. `generation` orders the versions of one row."""

    generation: int
    status: str
    admitted: frozenset[str] | None
    stable: Pins
    target: Pins

    def for_server(self, server_id: str) -> tuple[bool, Pins]:
        """(whether it is the target, the pins this server is given)."""
        if receives_target(self.status, self.admitted, server_id):
            return True, self.target
        return False, self.stable
