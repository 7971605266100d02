"""What staged rollouts look like from outside: a deployment's rollout (stage, per-stage
progress, bake time left, why it halted) and the per-deployment breakdown of the rollout of one
config version (`GET /v1/rollouts/{scope}/{id}`). Reads only."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from controlplane import fleet, rollouts
from controlplane.rollouts import Member, Policy, RolloutState
from controlplane.services import fleet as fleet_service
from controlplane.services.objects import get_deployment_row
from controlplane.services.rollouts import (
    FleetView,
    halt_of,
    members,
    pins_of,
    policy_of,
    state_of,
)
from controlplane.store.models import RolloutRow
from controlplane.store.unit_of_work import UnitOfWork

# Phases of one version's rollout that end a wait (`--wait`, `wait_for_rollout`).
FINISHED = (fleet.PHASE_DONE, fleet.PHASE_REFUSED, rollouts.PHASE_HALTED, rollouts.PHASE_ABORTED)


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else round(value.total_seconds(), 1)


def _stage_ref(policy: Policy, index: int) -> dict[str, Any]:
    return {
        "index": index,
        "name": policy.stage_name(index),
        "number": index + 1,
        "of": policy.final + 1,
    }


def _stage_of_each(policy: Policy, state: RolloutState, targeted: list[Member]) -> dict[str, int]:
    """The stage each targeted server receives the target in (for display)."""
    candidates = [m.candidate() for m in targeted]
    chosen = [rollouts.selection(policy, i, candidates) for i in range(policy.final + 1)]
    out = {}
    for m in targeted:
        sid = m.server.server_id
        first = next(i for i, picked in enumerate(chosen) if sid in picked)
        if rollouts.receives_target(rollouts.ACTIVE, state.admitted, sid):
            first = min(first, state.stage)  # admitted: at the latest in the current stage
        else:
            first = max(first, state.stage + 1)  # not admitted yet: a later stage
        out[sid] = min(first, policy.final)
    return out


def _progress(member: Member) -> str:
    return fleet.server_progress(member.server, member.target_version)


def deployment_view(uow: UnitOfWork, deployment_id: str, view: FleetView) -> dict[str, Any]:
    """A deployment's staged rollout, as `spirlctl rollout status --trust-domain-deployment`
    shows it."""
    tdd = get_deployment_row(uow, deployment_id)
    row = uow.repo.rollout(deployment_id)
    policy = policy_of(row) if row is not None else None
    if row is None or policy is None:
        return {
            "trust_domain_deployment_id": tdd.id,
            "name": tdd.name,
            "phase": rollouts.PHASE_NONE,
            "policy": None,
            "generation": row.generation if row else 0,
        }
    state = state_of(row)
    ms = members(uow, row, view)
    targeted = [m for m in ms if m.targeted]
    stage_of = _stage_of_each(policy, state, targeted)
    finished = row.status in (rollouts.COMPLETE, rollouts.ABORTED)
    waiting = None
    if row.status == rollouts.ACTIVE:
        waiting = rollouts.judge(policy, state, ms, view.now).reason
    servers = []
    for m in sorted(targeted, key=lambda m: (stage_of[m.server.server_id], m.server.name)):
        gets_target = rollouts.receives_target(row.status, state.admitted, m.server.server_id)
        servers.append(
            {
                "id": m.server.server_id,
                "name": m.server.name,
                "cluster_id": m.server.cluster_id,
                "stage": stage_of[m.server.server_id],
                "receives": "target" if gets_target else "stable",
                "target_version": m.target_version,
                "stable_version": m.stable_version,
                "applied_version": m.server.applied_version,
                "progress": _progress(m),
                "state": m.server.state,
                "error": m.server.error,
            }
        )
    return {
        "trust_domain_deployment_id": tdd.id,
        "name": tdd.name,
        "phase": rollouts.phase_of(row.status),
        "policy": {
            "stages": [
                {
                    "name": s.name,
                    **s.describe(),
                    "bake_seconds": s.bake.total_seconds(),
                }
                for s in policy.stages
            ],
            "on_failure": policy.on_failure,
        },
        "generation": row.generation,
        "stage": _stage_ref(policy, row.stage),
        "started_at": row.started_at.isoformat(),
        "started_by": row.started_by,
        "stage_started_at": row.stage_started_at.isoformat(),
        "ready_at": row.ready_at.isoformat() if row.ready_at else None,
        "bake_seconds_left": _seconds(rollouts.bake_left(policy, state, view.now)),
        "waiting_for": waiting,
        "halt": halt_of(row),
        "accepted_failures": sorted(state.accepted),
        "changes": _changes(uow, row),
        "stages": [
            _stage_view(policy, row, i, [m for m in targeted if stage_of[m.server.server_id] == i])
            for i in range(policy.final + 1)
        ],
        "counts": _counts(targeted),
        "servers": servers,
        "finished": finished,
    }


def _stage_view(policy: Policy, row: RolloutRow, index: int, ms: list[Member]) -> dict[str, Any]:
    if row.status == rollouts.COMPLETE:
        state = "done"
    elif index < row.stage:
        state = "done" if ms else "skipped"
    elif index == row.stage:
        state = "current"
    else:
        state = "pending"
    stage = policy.stages[index] if index < policy.final else None
    return {
        "index": index,
        "name": policy.stage_name(index),
        "select": stage.describe() if stage else {"all": True},
        "bake_seconds": policy.bake(index).total_seconds(),
        "state": state,
        "counts": _counts(ms),
    }


def _counts(ms: list[Member]) -> dict[str, int]:
    counts = dict.fromkeys(("servers", *fleet.SERVER_PROGRESS, "unhealthy"), 0)
    for m in ms:
        counts["servers"] += 1
        counts[_progress(m)] += 1
        if m.applied and m.server.state == fleet.UNHEALTHY:
            counts["unhealthy"] += 1
    return counts


def _changes(uow: UnitOfWork, row: RolloutRow) -> list[dict[str, Any]]:
    """The layers being rolled out: scope, id and per-scope versions from stable to target."""
    stable, target = pins_of(row.stable_json), pins_of(row.target_json)
    keys = sorted(k for k in set(stable) | set(target) if stable.get(k) != target.get(k))
    versions = uow.repo.versions_at([r for k in keys for r in (stable.get(k), target.get(k)) if r])
    out = []
    for key in keys:
        scope, scope_id = key.split("/", 1)
        old, new = versions.get(stable.get(key, 0)), versions.get(target.get(key, 0))
        out.append(
            {
                "scope": scope,
                "id": scope_id,
                "from_version": old[2] if old else 0,
                "to_version": new[2] if new else 0,
            }
        )
    return out


# -- one version's rollout, per deployment ------------------------------------------------------


def scope_status(
    uow: UnitOfWork, scope: str, scope_id: str, version: int | None, view: FleetView
) -> dict[str, Any]:
    """`GET /v1/rollouts/{scope}/{id}`: how far a version got (services/fleet.py), with each
    deployment it reaches broken down (`deployments`), staged ones with their stage. `phase`
    becomes `halted` or `aborted` when a deployment's staged rollout of it did."""
    rollout = fleet_service.rollout_status(
        uow, scope, scope_id, version, view.policy, view.seen, view.now
    )
    status, revision = rollout.status, rollout.sent_revision
    key = rollouts.pin_key(scope, scope_id)
    groups: dict[str, list[fleet.ServerRollout]] = {}
    for deployment_id, server in rollout.servers:
        groups.setdefault(deployment_id, []).append(server)
    deployments = []
    for deployment_id, servers in sorted(groups.items()):
        progress = fleet.rollout_progress(revision, servers)
        deployments.append(
            {
                "id": deployment_id,
                **_staged_phase(uow, deployment_id, key, revision, progress.phase, view),
                "counts": {"targeted": progress.targeted, **progress.counts},
            }
        )
    phases = {d["phase"] for d in deployments}
    for phase in (rollouts.PHASE_ABORTED, rollouts.PHASE_HALTED):
        if phase in phases:
            status["phase"] = phase
            break
    else:
        if status["phase"] == fleet.PHASE_DONE and phases - {fleet.PHASE_DONE}:
            status["phase"] = fleet.PHASE_IN_PROGRESS
    status["done"] = status["phase"] == fleet.PHASE_DONE
    status["deployments"] = deployments
    return status


def _staged_phase(
    uow: UnitOfWork,
    deployment_id: str,
    key: str,
    revision: int,
    plain_phase: str,
    view: FleetView,
) -> dict[str, Any]:
    """The phase of one version in one deployment: its servers' progress, or, while a staged
    rollout of that deployment still holds the version back from some servers, the rollout's."""
    row = uow.repo.rollout(deployment_id)
    policy = policy_of(row) if row is not None else None
    out: dict[str, Any] = {"phase": plain_phase, "stage": None}
    if row is None or policy is None or pins_of(row.stable_json).get(key, 0) >= revision:
        return out
    state = state_of(row)
    halt = halt_of(row)
    out["phase"] = rollouts.phase_of(row.status)
    if out["phase"] == rollouts.PHASE_IN_PROGRESS and plain_phase == fleet.PHASE_REFUSED:
        out["phase"] = fleet.PHASE_REFUSED  # the promoter halts it at its next pass
    out["stage"] = _stage_ref(policy, row.stage)
    out["bake_seconds_left"] = _seconds(rollouts.bake_left(policy, state, view.now))
    out["halt_reason"] = halt["reason"] if halt else None
    return out


def server_targets(
    uow: UnitOfWork, deployment_id: str, trust_domain_id: str, servers: Sequence[Mapping[str, Any]]
) -> dict[str, int] | None:
    """{server id: the effective version the control plane gives it} while a staged rollout
    holds some servers on the stable config; None for a deployment without a policy."""
    row = uow.repo.rollout(deployment_id)
    if row is None:
        return None
    status, admitted = row.status, state_of(row).admitted
    stable, target = pins_of(row.stable_json), pins_of(row.target_json)
    out = {}
    for server in servers:
        layers = rollouts.layer_keys(trust_domain_id, deployment_id, server["cluster_id"])
        pins = target if rollouts.receives_target(status, admitted, server["id"]) else stable
        out[server["id"]] = rollouts.pinned_version(pins, layers)
    return out


def rollout_gauges(
    uow: UnitOfWork,
) -> Iterator[tuple[str, str, tuple[tuple[str, str], ...], float]]:
    """Prometheus gauges of staged rollouts: how many are in each phase, and per deployment
    with a policy its stage (1-based; the final stage is the number of stages + 1) and whether
    it is halted or aborted (each metric's samples together, as the text format wants)."""
    phases = dict.fromkeys(rollouts.PHASES[1:], 0)
    stages, halted = [], []
    for row in uow.repo.rollouts():
        if policy_of(row) is None:
            continue
        phase = rollouts.phase_of(row.status)
        phases[phase] += 1
        labels = (("trust_domain_deployment_id", row.deployment_id),)
        stages.append((labels, float(row.stage + 1)))
        halted.append((labels, float(phase in (rollouts.PHASE_HALTED, rollouts.PHASE_ABORTED))))
    for phase, count in phases.items():
        yield (
            "spirl_rollouts",
            "Staged rollouts (deployments with a Rollout policy) by phase",
            (("phase", phase),),
            float(count),
        )
    for labels, value in stages:
        yield (
            "spirl_rollout_stage",
            "Current stage of each deployment's staged rollout (1-based; stages + 1 = all servers)",
            labels,
            value,
        )
    for labels, value in halted:
        yield (
            "spirl_rollout_halted",
            "1 while a deployment's staged rollout is halted or aborted, else 0",
            labels,
            value,
        )
