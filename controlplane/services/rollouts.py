"""Staged rollouts: a config write that reaches a deployment with a `Rollout` policy starts a
rollout of its new config; the promoter advances it in the background; operators promote,
pause, resume or abort it.

The decisions are pure (`controlplane/rollouts.py`). Here rollout rows are read and written,
always under a row lock (FOR UPDATE on PostgreSQL; the promoter takes it with SKIP LOCKED, so
two replicas never advance the same rollout at once, and config writes lock the rows they
change after the config write lock that orders revisions). Every change of what a server should
receive bumps the row's `generation` and records a `rollout` Change, so each replica's delivery
cache re-reads that one row (however many servers wait). Every transition is audited.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controlplane import rollouts
from controlplane.domain import (
    CLUSTER,
    DEPLOYMENT,
    TRUST_DOMAIN,
    NotFound,
    RolloutConflict,
    ScopeConfig,
    StoredSection,
    utc_now,
)
from controlplane.fleet import FleetPolicy
from controlplane.rollouts import DeliveryPins, Member, Policy, RolloutState
from controlplane.services import audit
from controlplane.services.fleet import rollout_view, sent_digests
from controlplane.services.objects import deployment_scopes, get_deployment_row
from controlplane.store.models import RolloutRow
from controlplane.store.unit_of_work import Change, UnitOfWork

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system:rollout"
MAX_REASON = 500  # characters of an operator's reason for an action


@dataclass(frozen=True)
class FleetView:
    """How the caller sees the fleet: its staleness window, the long-poll contacts it saw and
    has not written yet, and its clock (injectable: bake times in tests)."""

    policy: FleetPolicy = field(default_factory=FleetPolicy)
    seen: Mapping[str, datetime] = field(default_factory=dict)
    now: datetime = field(default_factory=utc_now)


# -- reading a row -----------------------------------------------------------------------------


def policy_of(row: RolloutRow) -> Policy | None:
    return rollouts.policy_from_spec(json.loads(row.policy_json)) if row.policy_json else None


def pins_of(text: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in json.loads(text).items()}


def admitted_of(row: RolloutRow) -> frozenset[str] | None:
    return None if row.admitted_json is None else frozenset(json.loads(row.admitted_json))


def accepted_of(row: RolloutRow) -> frozenset[str]:
    return frozenset(json.loads(row.accepted_json)) if row.accepted_json else frozenset()


def state_of(row: RolloutRow) -> RolloutState:
    return RolloutState(row.status, row.stage, admitted_of(row), row.ready_at, accepted_of(row))


def halt_of(row: RolloutRow) -> dict[str, Any] | None:
    return json.loads(row.halt_json) if row.halt_json else None


def delivery_pins(uow: UnitOfWork, deployment_id: str) -> DeliveryPins | None:
    """What the delivery cache needs of a deployment's rollout (None: it never had a policy)."""
    row = uow.repo.rollout(deployment_id)
    if row is None:
        return None
    return DeliveryPins(
        row.generation,
        row.status,
        admitted_of(row),
        pins_of(row.stable_json),
        pins_of(row.target_json),
    )


def members(uow: UnitOfWork, row: RolloutRow, view: FleetView) -> list[Member]:
    """Every server of the deployment with the versions the rollout gives it."""
    tdd = get_deployment_row(uow, row.deployment_id)
    stable, target = pins_of(row.stable_json), pins_of(row.target_json)
    out = []
    for server in uow.repo.servers(row.deployment_id):
        layers = rollouts.layer_keys(tdd.trust_domain_id, tdd.id, server.cluster_id)
        out.append(
            Member(
                server=rollout_view(server, view.policy, view.seen, view.now),
                registered_at=server.registered_at,
                stable_version=rollouts.pinned_version(stable, layers),
                target_version=rollouts.pinned_version(target, layers),
            )
        )
    return out


def _heads(uow: UnitOfWork, deployment_id: str) -> dict[str, int]:
    """Revision of the current config of every layer the deployment's servers read."""
    keys = deployment_scopes(uow, deployment_id)
    return {rollouts.pin_key(*key): rev for key, rev in uow.repo.config_heads(keys).items()}


# -- changing a row ---------------------------------------------------------------------------


def _changed(uow: UnitOfWork, row: RolloutRow, now: datetime) -> None:
    """What servers should receive changed: every replica's delivery cache re-reads the row."""
    row.generation += 1
    row.updated_at = now
    uow.session.flush()
    uow.record(Change("rollout", row.deployment_id, row.generation))


def _audit(uow: UnitOfWork, row: RolloutRow, action: str, actor: str, **details: Any) -> None:
    policy = policy_of(row)
    stage = policy.stage_name(row.stage) if policy else None
    audit.record(
        uow,
        actor=actor,
        action=f"rollout.{action}",
        scope=DEPLOYMENT,
        scope_id=row.deployment_id,
        details={"status": row.status, "stage": stage, **details},
    )


def _enter(
    row: RolloutRow,
    policy: Policy,
    index: int,
    view: FleetView,
    ms: list[Member],
    *,
    start_over: bool = False,
) -> None:
    """Move to the first stage from `index` on that admits someone new. The servers admitted
    so far stay admitted, unless the rollout starts over; one that admits everyone already (its
    final stage) stays in its final stage, whatever stage `index` names."""
    targeted = [m.candidate() for m in ms if m.targeted]
    before = frozenset() if start_over else admitted_of(row)
    if before is None:
        stage, admitted = policy.final, None
    else:
        stage, admitted = rollouts.enter_stage(policy, index, targeted, before)
    row.stage = stage
    row.admitted_json = None if admitted is None else json.dumps(sorted(admitted))
    row.stage_started_at = view.now
    row.ready_at = None


def _complete(uow: UnitOfWork, row: RolloutRow, actor: str, reason: str, view: FleetView) -> None:
    row.status = rollouts.COMPLETE
    row.stable_json = row.target_json
    row.admitted_json = None
    row.ready_at = None
    _changed(uow, row, view.now)
    _audit(uow, row, "complete", actor, reason=reason)


def _start(uow: UnitOfWork, row: RolloutRow, actor: str, view: FleetView) -> None:
    """Roll out the deployment's current config (it supersedes any rollout in progress)."""
    previous = row.status
    row.target_json = json.dumps(_heads(uow, row.deployment_id), sort_keys=True)
    row.started_at = row.stage_started_at = view.now
    row.started_by = actor
    row.halt_json = None
    row.accepted_json = None
    policy = policy_of(row)
    if policy is None:  # no policy: every server at once, as without a rollout row
        row.status, row.stable_json, row.admitted_json = rollouts.COMPLETE, row.target_json, None
        _changed(uow, row, view.now)
        return
    ms = members(uow, row, view)
    if not any(m.targeted for m in ms):  # no server to roll it out to: done
        _complete(uow, row, actor, "no server receives a different config", view)
        return
    row.status = rollouts.ACTIVE
    _enter(row, policy, 0, view, ms, start_over=True)
    _changed(uow, row, view.now)
    _audit(
        uow,
        row,
        "start",
        actor,
        superseded=previous if previous != rollouts.COMPLETE else None,
        target=pins_of(row.target_json),
        stable=pins_of(row.stable_json),
    )


def on_config_write(
    uow: UnitOfWork,
    scope: str,
    scope_id: str,
    before: ScopeConfig,
    after: Mapping[str, StoredSection],
    actor: str,
    view: FleetView | None = None,
) -> None:
    """Called by a config write in its transaction, after the new version is flushed.

    A change of what servers receive starts a rollout in every deployment it reaches that has
    a policy. A change of the `Rollout` section alone takes effect at once and changes nothing
    servers receive; the write that first adds a policy is itself rolled out under it.
    """
    view = view or FleetView()
    rows: dict[str, RolloutRow | None]
    if scope == TRUST_DOMAIN:
        rows = {r.deployment_id: r for r in uow.repo.lock_rollouts_of_trust_domain(scope_id)}
    else:
        if scope == CLUSTER:
            cluster = uow.repo.cluster(scope_id)
            deployment_id = cluster.deployment_id if cluster else ""
        else:
            deployment_id = scope_id
        rows = {deployment_id: uow.repo.lock_rollout(deployment_id)}
    sent = sent_digests(before.sections) != sent_digests(after)
    for deployment_id, row in rows.items():
        if scope == DEPLOYMENT:
            section = after.get(rollouts.SECTION)
            policy_json = json.dumps(section.document["spec"]) if section else None
            if row is None:
                if policy_json is None:
                    continue  # no policy, never had one: every server at once, today's way
                row = _new_row(uow, deployment_id, before, policy_json, actor, view)
            elif row.policy_json != policy_json:
                row.policy_json = policy_json
                if not sent:  # else the rollout below starts over under the new policy
                    _policy_changed(uow, row, actor, view)
        if row is not None and sent:
            _start(uow, row, actor, view)


def _new_row(
    uow: UnitOfWork,
    deployment_id: str,
    before: ScopeConfig,
    policy_json: str,
    actor: str,
    view: FleetView,
) -> RolloutRow:
    """The first policy of a deployment: until now every server received the current config,
    so that config (as it was before this write) is stable and already complete."""
    stable = _heads(uow, deployment_id)
    key = rollouts.pin_key(DEPLOYMENT, deployment_id)
    stable.pop(key, None)
    if before.revision:
        stable[key] = before.revision
    pinned = json.dumps(stable, sort_keys=True)
    row = RolloutRow(
        deployment_id=deployment_id,
        policy_json=policy_json,
        status=rollouts.COMPLETE,
        stage=0,
        admitted_json=None,
        stable_json=pinned,
        target_json=pinned,
        generation=0,
        started_at=view.now,
        started_by=actor,
        stage_started_at=view.now,
        updated_at=view.now,
    )
    uow.repo.add(row)
    _changed(uow, row, view.now)
    return row


def _policy_changed(uow: UnitOfWork, row: RolloutRow, actor: str, view: FleetView) -> None:
    """A new policy applies at once to the rollout in progress, and never takes the target
    from a server that has it: a rollout in its final stage (everyone) stays there, one past
    the last stage of a shorter policy moves to its final stage."""
    policy = policy_of(row)
    if row.status == rollouts.COMPLETE:
        return
    if policy is None:
        _complete(uow, row, actor, "rollout policy removed: every server at once", view)
    elif row.status == rollouts.ABORTED:
        return
    elif row.admitted_json is None:  # the final stage: it admits everyone already
        row.stage = policy.final
    elif row.stage >= policy.final:
        row.stage = policy.final
        row.admitted_json = None
        _changed(uow, row, view.now)


def check_policy(
    uow: UnitOfWork,
    scope: str,
    scope_id: str,
    before: Mapping[str, StoredSection],
    after: Mapping[str, StoredSection],
) -> None:
    """A new `Rollout` section may name only clusters of its deployment (else a 422 at the JSON
    Pointer). An unchanged one is not checked again: a deleted cluster's stage admits nobody."""
    section = after.get(rollouts.SECTION)
    old = before.get(rollouts.SECTION)
    if scope != DEPLOYMENT or section is None or (old and old.digest == section.digest):
        return
    from controlplane.documents import DocumentValidationError, ValidationIssue

    own = {c.id for c in uow.repo.clusters(scope_id)}
    issues = [
        ValidationIssue(
            rollouts.SECTION,
            f"/spec/stages/{index}/clusters/{position}",
            f"cluster {cluster} is not a cluster of trust domain deployment {scope_id}",
            None,
        )
        for index, stage in enumerate(section.document["spec"]["stages"])
        for position, cluster in enumerate(stage.get("clusters") or [])
        if cluster not in own
    ]
    if issues:
        raise DocumentValidationError(issues)


# -- the promoter (background, every replica) ---------------------------------------------------


def advance_all(
    uow_factory: Callable[[], UnitOfWork], view_of: Callable[[], FleetView]
) -> list[tuple[str, rollouts.Verdict]]:
    """One promoter pass over the active and paused rollouts; [(deployment id, verdict)] of the
    rollouts that moved. Each row is taken with SKIP LOCKED: another replica advancing it, or a
    write or an operator changing it, is left alone until the next pass."""
    with uow_factory() as uow:
        ids = uow.repo.rollout_ids((rollouts.ACTIVE, rollouts.PAUSED))
    moved = []
    for deployment_id in ids:
        with uow_factory() as uow:
            row = uow.repo.lock_rollout(deployment_id, skip_locked=True)
            if row is None or row.status not in (rollouts.ACTIVE, rollouts.PAUSED):
                continue
            verdict = advance(uow, row, view_of())
            uow.commit()
        if verdict.action != rollouts.WAIT:
            moved.append((deployment_id, verdict))
    return moved


def advance(uow: UnitOfWork, row: RolloutRow, view: FleetView) -> rollouts.Verdict:
    """Judge one locked rollout and carry out the verdict (the caller commits)."""
    policy = policy_of(row)
    if policy is None:
        _complete(uow, row, SYSTEM_ACTOR, "no rollout policy: every server at once", view)
        return rollouts.Verdict(rollouts.COMPLETE_NOW, "no rollout policy")
    ms = members(uow, row, view)
    verdict = rollouts.judge(policy, state_of(row), ms, view.now)
    if verdict.action == rollouts.FAIL:
        _fail(uow, row, policy, verdict, view)
    elif verdict.action == rollouts.READY:
        row.ready_at = view.now
        row.updated_at = view.now
    elif verdict.action == rollouts.ADVANCE:
        before = policy.stage_name(row.stage)
        _enter(row, policy, row.stage + 1, view, ms)
        _changed(uow, row, view.now)
        _audit(uow, row, "promote", SYSTEM_ACTOR, from_stage=before, reason=verdict.reason)
    elif verdict.action == rollouts.RESELECT:
        before = policy.stage_name(row.stage)
        _enter(row, policy, row.stage, view, ms)
        _changed(uow, row, view.now)
        _audit(uow, row, "reselect", SYSTEM_ACTOR, from_stage=before, reason=verdict.reason)
    elif verdict.action == rollouts.COMPLETE_NOW:
        _complete(uow, row, SYSTEM_ACTOR, verdict.reason, view)
    return verdict


def _fail(
    uow: UnitOfWork, row: RolloutRow, policy: Policy, verdict: rollouts.Verdict, view: FleetView
) -> None:
    rollback = policy.on_failure == rollouts.ON_FAILURE_ROLLBACK
    row.status = rollouts.ABORTED if rollback else rollouts.HALTED
    row.halt_json = json.dumps(
        {"reason": verdict.reason, "server_id": verdict.server_id, "at": view.now.isoformat()}
    )
    _changed(uow, row, view.now)
    _audit(uow, row, "rollback" if rollback else "halt", SYSTEM_ACTOR, reason=verdict.reason)
    log.warning(
        "rollout %s",
        "rolled back" if rollback else "halted",
        extra={"deployment_id": row.deployment_id, "reason": verdict.reason},
    )


# -- operators ------------------------------------------------------------------------------------


def act(
    uow: UnitOfWork,
    deployment_id: str,
    action: str,
    actor: str,
    view: FleetView,
    *,
    reason: str | None = None,
) -> None:
    """promote (next stage now, or complete at the last), pause, resume (the current stage's
    gate and bake start over; an aborted rollout starts over from its first stage: a retry once
    the cause is fixed), abort (every server back to the stable config). `reason` goes to the
    audit log."""
    if action not in rollouts.ACTIONS:
        raise NotFound(f"unknown rollout action {action!r}; actions: {', '.join(rollouts.ACTIONS)}")
    get_deployment_row(uow, deployment_id)
    row = uow.repo.lock_rollout(deployment_id)
    policy = policy_of(row) if row is not None else None
    if row is None or policy is None:
        raise RolloutConflict(
            f"trust domain deployment {deployment_id} has no rollout policy: changes reach "
            "every server at once (set a Rollout section at its scope to stage them)",
            rollouts.PHASE_NONE,
        )
    phase = rollouts.phase_of(row.status)
    if row.status not in rollouts.ACTIONS[action]:
        raise RolloutConflict(
            f"cannot {action} the rollout of {deployment_id}: it is {phase}"
            + ("; a new config write starts the next one" if phase != "paused" else ""),
            phase,
        )
    before = policy.stage_name(row.stage)
    if action == rollouts.PROMOTE and row.stage >= policy.final:
        _complete(uow, row, actor, reason or "promoted at the last stage", view)
        uow.commit()
        return
    if action == rollouts.RESUME and row.status == rollouts.ABORTED:
        row.accepted_json = None
        row.started_at = view.now
        _enter(row, policy, 0, view, members(uow, row, view), start_over=True)
    if action == rollouts.PROMOTE:
        halt = halt_of(row)
        if row.status == rollouts.HALTED and halt and halt.get("server_id"):
            # The operator accepts this server's failure: the gate no longer waits on it.
            row.accepted_json = json.dumps(sorted(accepted_of(row) | {halt["server_id"]}))
        _enter(row, policy, row.stage + 1, view, members(uow, row, view))
    if action in (rollouts.PROMOTE, rollouts.RESUME):
        row.status = rollouts.ACTIVE
        row.halt_json = None
        row.ready_at = None
    elif action == rollouts.PAUSE:
        row.status = rollouts.PAUSED
    else:
        row.status = rollouts.ABORTED
    _changed(uow, row, view.now)
    _audit(uow, row, action, actor, from_stage=before, reason=reason)
    uow.commit()
