"""Staged rollouts over the real API, on SQLite and PostgreSQL: the state machine (stages, gates,
bake times, halts, rollbacks, superseding writes, operators' actions), what each server is
delivered, the audit log and metrics, and two replicas advancing the same rollouts.

The promoter runs when a test says so (`promote`), on the app's own event loop, with the app's
clock: a `Clock` the test moves, so bake times pass without waiting. Servers are simulated by
their long-polls and status reports (real spirl-tds processes are in tests/e2e).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from controlplane.api.app import Settings
from controlplane.fleet import FleetPolicy

from support.api import (
    KEY_LIFECYCLE,
    KEY_MANAGER_AZURE,
    make_topology,
    ok,
    post_status,
    put_config,
    register_server,
    status_report,
    sync,
)

TDD = "trust-domain-deployment"
POLICY = """\
section: Rollout
schema: v1
spec:
  stages:
    - name: canary
      servers: 1
      bake: 10m
    - name: half
      percent: 50
      bake: 5m
  onFailure: {on_failure}
"""


class Clock:
    """The control plane's clock in these tests: real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api_settings(clock: Clock) -> Settings:
    # A staleness window longer than any move of the clock: moving it does not silence servers.
    return Settings(
        fleet=FleetPolicy(stale_after=timedelta(days=1)), housekeeping=False, clock=clock
    )


def promote(live_api: Any) -> list[tuple[str, str]]:
    """One pass of the promoter, on the app's loop: [(deployment id, what it did)]."""
    work = live_api.app.state.housekeeping.promote()
    moved = asyncio.run_coroutine_threadsafe(work, live_api.state.cache._loop).result(30)
    return [(deployment, verdict.action) for deployment, verdict in moved]


class Fleet:
    """A deployment with a rollout policy and four servers (a is the oldest: the canary)."""

    def __init__(
        self, live_api: Any, client: httpx.Client, on_failure: str = "halt", td: str = "example.org"
    ) -> None:
        self.api, self.c = live_api, client
        self.ids = make_topology(client, td)
        ok(put_config(client, TDD, self.ids["tdd"], KEY_LIFECYCLE))
        self.servers = {
            name: register_server(client, self.ids["tdd"], name=name) for name in "abcd"
        }
        self.base = self.version("a")
        assert {self.version(n) for n in "bcd"} == {self.base}
        # Adding the policy changes nothing servers receive: no rollout, no new version.
        ok(put_config(client, TDD, self.ids["tdd"], POLICY.format(on_failure=on_failure)))
        assert self.rollout()["phase"] == "done"
        assert {self.version(n) for n in "abcd"} == {self.base}
        for name in "abcd":
            self.report(name, self.base)

    def version(self, name: str) -> int:
        """The effective version the control plane delivers to this server now."""
        return int(ok(sync(self.api.url, self.servers[name]))["config"]["version"])

    def delivered(self) -> dict[str, int]:
        return {name: self.version(name) for name in self.servers}

    def report(self, name: str, applied: int, **fields: Any) -> None:
        ok(
            post_status(self.api.url, self.servers[name], status_report(version=applied, **fields)),
            204,
        )

    def refuse(self, name: str, version: int, applied: int) -> None:
        self.report(
            name,
            version,
            applied_version=applied,
            health="UNHEALTHY",
            error=f"config version {version} not applied: vault says no",
            refused_version=version,
        )

    def rollout(self) -> dict[str, Any]:
        return ok(self.c.get(f"/v1/trust-domain-deployments/{self.ids['tdd']}/rollout"))

    def act(self, action: str, client: httpx.Client | None = None) -> httpx.Response:
        return (client or self.c).post(
            f"/v1/trust-domain-deployments/{self.ids['tdd']}/rollout/{action}"
        )

    def write(self, text: str = KEY_MANAGER_AZURE) -> int:
        ok(put_config(self.c, TDD, self.ids["tdd"], text))
        return self.version_of_scope()

    def version_of_scope(self) -> int:
        return int(ok(self.c.get(f"/v1/rollouts/{TDD}/{self.ids['tdd']}"))["revision"])

    def audit(self) -> list[tuple[str, str]]:
        items = ok(self.c.get("/v1/audit", params={"limit": 200}))["items"]
        return [
            (e["action"], e["actor"]) for e in reversed(items) if e["action"].startswith("rollout.")
        ]


def test_a_change_goes_stage_by_stage_after_each_gate_and_bake(live_api, clock):
    with live_api.client() as c:
        f = Fleet(live_api, c)
        target = f.write()
        assert target > f.base
        assert f.delivered() == {"a": target, "b": f.base, "c": f.base, "d": f.base}
        status = f.rollout()
        assert (status["phase"], status["stage"]["name"], status["stage"]["number"]) == (
            "in_progress",
            "canary",
            1,
        )
        # Version 2 only added the policy (servers never receive it): they run version 1's config.
        assert status["changes"] == [
            {"scope": TDD, "id": f.ids["tdd"], "from_version": 1, "to_version": 3}
        ]
        assert [s["state"] for s in status["stages"]] == ["current", "pending", "pending"]
        assert [s["counts"]["servers"] for s in status["stages"]] == [1, 1, 2]
        scope = ok(c.get(f"/v1/rollouts/{TDD}/{f.ids['tdd']}"))
        assert scope["phase"] == "in_progress" and scope["counts"]["pending"] == 4
        [dep] = scope["deployments"]
        assert (dep["id"], dep["phase"], dep["stage"]["name"]) == (
            f.ids["tdd"],
            "in_progress",
            "canary",
        )

        # The gate: the canary must apply it and report HEALTHY; then the bake time runs.
        assert promote(live_api) == []
        assert "still to apply it" in f.rollout()["waiting_for"]
        f.report("a", target)
        assert promote(live_api) == [(f.ids["tdd"], "ready")]
        assert f.rollout()["bake_seconds_left"] == pytest.approx(600, abs=5)
        clock.advance(timedelta(minutes=9))
        assert promote(live_api) == [] and f.delivered()["b"] == f.base
        clock.advance(timedelta(minutes=1, seconds=1))
        assert promote(live_api) == [(f.ids["tdd"], "advance")]
        # 50 % of four: the two oldest, the canary included.
        assert f.delivered() == {"a": target, "b": target, "c": f.base, "d": f.base}
        assert f.rollout()["stage"]["name"] == "half"

        f.report("b", target)
        assert promote(live_api) == [(f.ids["tdd"], "ready")]
        clock.advance(timedelta(minutes=5))
        assert promote(live_api) == [(f.ids["tdd"], "advance")]
        assert set(f.delivered().values()) == {target}
        assert f.rollout()["stage"] == {"index": 2, "name": "all", "number": 3, "of": 3}
        assert ok(c.get(f"/v1/rollouts/{TDD}/{f.ids['tdd']}"))["phase"] == "in_progress"

        # The final stage completes once every reachable server applied it; no bake.
        f.report("c", target)
        assert promote(live_api) == []
        f.report("d", target)
        assert promote(live_api) == [(f.ids["tdd"], "complete")]
        status = f.rollout()
        assert status["phase"] == "done" and status["changes"] == []
        assert [s["state"] for s in status["stages"]] == ["done", "done", "done"]
        scope = ok(c.get(f"/v1/rollouts/{TDD}/{f.ids['tdd']}"))
        assert (
            scope["phase"] == "done" and scope["done"] and scope["deployments"][0]["stage"] is None
        )
        assert f.audit() == [
            ("rollout.start", "admin:test-admin"),
            ("rollout.promote", "system:rollout"),
            ("rollout.promote", "system:rollout"),
            ("rollout.complete", "system:rollout"),
        ]
        metrics = c.get("/metrics").text
        assert f'spirl_rollout_stage{{trust_domain_deployment_id="{f.ids["tdd"]}"}} 3' in metrics
        assert 'spirl_rollouts{phase="done"} 1' in metrics


def test_a_refusal_at_the_canary_halts_and_abort_returns_every_server(live_api):
    with live_api.client() as c:
        f = Fleet(live_api, c)
        target = f.write()
        f.refuse("a", target, applied=f.base)
        assert promote(live_api) == [(f.ids["tdd"], "fail")]
        status = f.rollout()
        assert status["phase"] == "halted"
        assert status["halt"]["server_id"] == f.servers["a"]["server_id"]
        assert f"refused version {target}" in status["halt"]["reason"]
        assert "vault says no" in status["halt"]["reason"]
        # The others never got it; a halt keeps everyone where they are.
        assert f.delivered() == {"a": target, "b": f.base, "c": f.base, "d": f.base}
        scope = ok(c.get(f"/v1/rollouts/{TDD}/{f.ids['tdd']}"))
        assert scope["phase"] == "halted" and not scope["done"]
        assert "refused" in scope["deployments"][0]["halt_reason"]
        metrics = c.get("/metrics").text
        assert f'spirl_rollout_halted{{trust_domain_deployment_id="{f.ids["tdd"]}"}} 1' in metrics
        assert "spirl_rollout_halts_total 1" in metrics
        assert promote(live_api) == []  # halted: nothing moves by itself

        viewer = live_api.client("viewer")
        assert f.act("abort", viewer).status_code == 403
        aborted = ok(f.act("abort"))
        assert aborted["phase"] == "aborted"
        assert set(f.delivered().values()) == {f.base}  # the canary too
        assert ok(c.get(f"/v1/rollouts/{TDD}/{f.ids['tdd']}"))["phase"] == "aborted"
        again = f.act("abort")
        assert again.status_code == 409 and again.json()["error"] == "rollout_conflict"
        assert again.json()["phase"] == "aborted"
        # Once the cause is fixed, resume retries it from the first stage.
        retried = ok(f.act("resume"))
        assert (retried["phase"], retried["stage"]["name"]) == ("in_progress", "canary")
        assert f.delivered() == {"a": target, "b": f.base, "c": f.base, "d": f.base}
        ok(f.act("abort"))
        assert f.audit() == [
            ("rollout.start", "admin:test-admin"),
            ("rollout.halt", "system:rollout"),
            ("rollout.abort", "admin:test-admin"),
            ("rollout.resume", "admin:test-admin"),
            ("rollout.abort", "admin:test-admin"),
        ]
        # The next write starts over from the stable config.
        newest = f.write(KEY_MANAGER_AZURE.replace("my-key-vault", "other-vault"))
        assert f.delivered() == {"a": newest, "b": f.base, "c": f.base, "d": f.base}
        assert f.rollout()["phase"] == "in_progress"


def test_unhealthy_after_applying_rolls_back_at_once_with_on_failure_rollback(live_api):
    with live_api.client() as c:
        f = Fleet(live_api, c, on_failure="rollback")
        target = f.write()
        f.report("a", target)
        assert promote(live_api) == [(f.ids["tdd"], "ready")]
        # UNHEALTHY before applying is not the change's fault; after applying it is.
        f.report("b", f.base, health="UNHEALTHY", error="old trouble")
        assert promote(live_api) == []
        f.report("a", target, health="UNHEALTHY", error="creating key failed: 403 ForbiddenByRbac")
        assert promote(live_api) == [(f.ids["tdd"], "fail")]
        status = f.rollout()
        assert (
            status["phase"] == "aborted" and "UNHEALTHY after applying" in status["halt"]["reason"]
        )
        assert set(f.delivered().values()) == {f.base}
        assert [a for a, _ in f.audit()] == ["rollout.start", "rollout.rollback"]


def test_a_new_write_supersedes_the_rollout_and_starts_from_the_first_stage(live_api, clock):
    with live_api.client() as c:
        f = Fleet(live_api, c)
        first = f.write()
        ok(f.act("promote"))  # operator: skip the canary's gate
        assert f.delivered() == {"a": first, "b": first, "c": f.base, "d": f.base}
        newest = f.write(KEY_MANAGER_AZURE.replace("my-key-vault", "other-vault"))
        # The version that was never fully rolled out is withdrawn: b goes back to stable
        # until its stage comes again, with the newest version.
        assert f.delivered() == {"a": newest, "b": f.base, "c": f.base, "d": f.base}
        status = f.rollout()
        assert status["stage"]["name"] == "canary" and status["phase"] == "in_progress"
        assert [a for a, _ in f.audit()] == ["rollout.start", "rollout.promote", "rollout.start"]
        # The older version's rollout follows the newest (it includes it).
        old = ok(c.get(f"/v1/rollouts/{TDD}/{f.ids['tdd']}", params={"version": 3}))
        assert old["current_version"] == 4 and old["deployments"][0]["stage"]["name"] == "canary"


def test_operators_pause_resume_and_promote(live_api, clock):
    with live_api.client() as c:
        f = Fleet(live_api, c)
        target = f.write()
        f.report("a", target)
        assert ok(f.act("pause"))["phase"] == "paused"
        assert f.act("pause").status_code == 409
        clock.advance(timedelta(hours=1))
        assert promote(live_api) == []  # baked long ago, but paused
        assert f.delivered()["b"] == f.base
        assert ok(f.act("resume"))["phase"] == "in_progress"
        assert promote(live_api) == [(f.ids["tdd"], "ready")]  # the bake starts over
        promoted = ok(f.act("promote"))
        assert promoted["stage"]["name"] == "half" and promoted["bake_seconds_left"] is None
        assert f.delivered()["b"] == target
        ok(f.act("promote"))  # to the final stage: everyone
        assert set(f.delivered().values()) == {target}
        assert ok(f.act("promote"))["phase"] == "done"  # at the last stage: complete
        assert f.act("promote").status_code == 409
        assert (
            c.post(f"/v1/trust-domain-deployments/{f.ids['tdd']}/rollout/undo").status_code == 404
        )
        actions = [a for a, actor in f.audit() if actor == "admin:test-admin"]
        assert actions == [
            "rollout.start",
            "rollout.pause",
            "rollout.resume",
            "rollout.promote",
            "rollout.promote",
            "rollout.complete",
        ]


def test_promoting_past_a_halt_accepts_that_servers_failure(live_api):
    with live_api.client() as c:
        f = Fleet(live_api, c)
        target = f.write()
        f.refuse("a", target, applied=f.base)
        promote(live_api)
        assert ok(f.act("resume"))["phase"] == "in_progress"
        assert promote(live_api) == [(f.ids["tdd"], "fail")]  # still refusing: halts again
        status = ok(f.act("promote"))
        assert status["stage"]["name"] == "half"
        assert status["accepted_failures"] == [f.servers["a"]["server_id"]]
        f.report("b", target)
        assert promote(live_api) == [(f.ids["tdd"], "ready")]  # a no longer holds the gate


def test_policy_edits_apply_at_once_and_without_a_policy_everyone_gets_it(live_api):
    with live_api.client() as c:
        f = Fleet(live_api, c)
        target = f.write()
        # A policy edit is not rolled out, restarts nothing and sends servers nothing new.
        ok(
            put_config(
                c, TDD, f.ids["tdd"], POLICY.format(on_failure="rollback").replace("10m", "1m")
            )
        )
        status = f.rollout()
        assert status["policy"]["stages"][0]["bake_seconds"] == 60
        assert status["stage"]["name"] == "canary" and f.delivered()["b"] == f.base
        # No policy: today's behaviour, every server at once.
        ok(c.delete(f"/v1/config/{TDD}/{f.ids['tdd']}/sections/Rollout"))
        assert set(f.delivered().values()) == {target}
        assert f.rollout()["phase"] == "none"
        conflict = f.act("promote")
        assert conflict.status_code == 409 and conflict.json()["phase"] == "none"
        effective = ok(
            c.get("/v1/effective-config", params={"trust_domain_deployment_id": f.ids["tdd"]})
        )
        assert "Rollout" not in effective["sections"]  # servers never receive it


LONGER_POLICY = POLICY.format(on_failure="halt").replace(
    "  onFailure:",
    "    - name: most\n      percent: 60\n    - name: nearly\n      percent: 75\n  onFailure:",
)


def test_a_policy_edit_in_the_final_stage_takes_the_target_from_nobody(live_api, clock):
    """Editing the policy changes nothing servers receive: a rollout that admits everyone
    already stays in its final stage under a longer policy, and completes from there."""
    with live_api.client() as c:
        f = Fleet(live_api, c)
        target = f.write()
        for name, bake in (("a", 11), ("b", 6)):
            f.report(name, target)
            assert promote(live_api) == [(f.ids["tdd"], "ready")]
            clock.advance(timedelta(minutes=bake))
            assert promote(live_api) == [(f.ids["tdd"], "advance")]
        assert f.rollout()["stage"]["name"] == "all"
        f.report("c", target)  # d has not applied it yet: the final stage is still open
        ok(put_config(c, TDD, f.ids["tdd"], LONGER_POLICY))
        status = f.rollout()
        assert status["stage"] == {"index": 4, "name": "all", "number": 5, "of": 5}
        assert set(f.delivered().values()) == {target}
        f.report("d", target)
        assert promote(live_api) == [(f.ids["tdd"], "complete")]
        assert set(f.delivered().values()) == {target}


def test_a_write_of_the_policy_alone_is_done_where_servers_applied_what_it_kept(live_api):
    """Versions that change only the Rollout section (servers are never sent it) are applied
    where the content they kept is: `--wait` and `wait_for_rollout` end."""

    def scope_status(version: int | None = None) -> dict[str, Any]:
        params = {"version": version} if version else None
        return ok(c.get(f"/v1/rollouts/{TDD}/{f.ids['tdd']}", params=params))

    with live_api.client() as c:
        f = Fleet(live_api, c)  # its last write added the policy, and every server applied v1
        added = scope_status()
        assert (added["version"], added["phase"], added["done"]) == (2, "done", True)
        assert added["counts"]["applied"] == 4 and added["deployments"][0]["phase"] == "done"
        # A change in progress: a policy edit during it is done when the change is.
        target = f.write()
        ok(put_config(c, TDD, f.ids["tdd"], POLICY.format(on_failure="rollback")))
        edited = scope_status()
        assert (edited["version"], edited["phase"]) == (4, "in_progress")
        assert edited["counts"]["applied"] == 0  # nobody applied version 3 yet
        for name in "abcd":
            f.report(name, target)
        assert scope_status()["phase"] == "in_progress"  # the rollout still holds it back
        ok(f.act("promote"))
        ok(f.act("promote"))
        assert promote(live_api) == [(f.ids["tdd"], "complete")]
        assert scope_status()["done"] and scope_status(3)["done"]
        # Deleting the policy changes nothing servers receive either.
        ok(c.delete(f"/v1/config/{TDD}/{f.ids['tdd']}/sections/Rollout"))
        removed = scope_status()
        assert (removed["version"], removed["phase"], removed["done"]) == (5, "done", True)
        assert set(f.delivered().values()) == {target}


def test_a_stage_whose_servers_are_gone_selects_again_among_reachable_ones(live_api, clock):
    with live_api.client() as c:
        f = Fleet(live_api, c)
        target = f.write()
        assert f.delivered()["a"] == target
        ok(c.delete(f"/v1/servers/{f.servers['a']['server_id']}"))  # the canary leaves
        # The next oldest reachable server becomes the canary; the gate waits for it.
        assert promote(live_api) == [(f.ids["tdd"], "reselect")]
        assert {n: f.version(n) for n in "bcd"} == {"b": target, "c": f.base, "d": f.base}
        status = f.rollout()
        assert status["stage"]["name"] == "canary" and "still to apply" in status["waiting_for"]
        f.report("b", target)
        assert promote(live_api) == [(f.ids["tdd"], "ready")]
        clock.advance(timedelta(minutes=11))
        assert promote(live_api) == [(f.ids["tdd"], "advance")]
        assert f.rollout()["stage"]["name"] == "half"
        assert ("rollout.reselect", "system:rollout") in f.audit()


def test_a_server_given_a_promotion_by_another_replica_is_not_sent_the_stable_config(
    live_api, monkeypatch
):
    """Another replica promoted the rollout and served b the target; this one has not heard of
    it yet (its notification is late): it re-reads instead of sending b the older version."""
    from controlplane.services import rollouts as rollout_service
    from controlplane.store.unit_of_work import UnitOfWorkFactory

    cache = live_api.state.cache
    late: list[list[Any]] = []
    hear = cache.apply_changes

    def notifications(changes: Any) -> None:
        changes = list(changes)
        if any(change.kind == "rollout" for change in changes):
            late.append(changes)  # on its way, not here yet
        else:
            hear(changes)

    with live_api.client() as c:
        f = Fleet(live_api, c)
        target = f.write()
        first = ok(sync(live_api.url, f.servers["b"]))
        assert first["config"]["version"] == f.base
        monkeypatch.setattr(cache, "apply_changes", notifications)
        with UnitOfWorkFactory(live_api.engine)() as uow:  # the other replica
            view = rollout_service.FleetView()
            rollout_service.act(uow, f.ids["tdd"], "promote", "admin:elsewhere", view)
        reply = ok(sync(live_api.url, f.servers["b"], target, first["bundle"]["version"], 0))
        assert reply["config"]["version"] == target and reply["changed"] is False
        assert f.version("c") == f.base  # not admitted: still the stable config


def test_the_first_policy_stages_the_change_it_comes_with(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        servers = [register_server(c, ids["tdd"], name=n) for n in "ab"]
        base = ok(sync(live_api.url, servers[1]))["config"]["version"]
        ok(
            put_config(
                c, TDD, ids["tdd"], KEY_MANAGER_AZURE + "---\n" + POLICY.format(on_failure="halt")
            )
        )
        new = [ok(sync(live_api.url, s))["config"] for s in servers]
        assert new[0]["version"] > base and new[1]["version"] == base
        assert "KeyManager" in new[0]["sections"] and "Rollout" not in new[0]["sections"]


def test_a_policy_names_only_clusters_of_its_deployment(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        other = make_topology(c, "other.example")
        text = POLICY.format(on_failure="halt").replace(
            "      servers: 1\n", f"      clusters: [{ids['cluster']}, {other['cluster']}]\n"
        )
        refused = put_config(c, TDD, ids["tdd"], text)
        assert refused.status_code == 422
        [issue] = refused.json()["errors"]
        assert (issue["section"], issue["pointer"]) == ("Rollout", "/spec/stages/0/clusters/1")
        assert other["cluster"] in issue["reason"]
        assert ok(c.get(f"/v1/config/{TDD}/{ids['tdd']}"))["version"] == 0  # nothing stored
        dry = put_config(c, TDD, ids["tdd"], text, validate_only=True)
        assert dry.status_code == 422
        bad = put_config(c, "cluster", ids["cluster"], POLICY.format(on_failure="halt"))
        assert bad.status_code == 422 and bad.json()["errors"][0]["pointer"] == "/section"


def test_cluster_stages_and_writes_at_other_scopes(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        new_cluster = {"name": "west", "trust_domain_deployment_id": ids["tdd"]}
        west = ok(c.post("/v1/clusters", json=new_cluster), 201)["id"]
        new_tdd = {"name": "plain", "trust_domain_id": ids["td"]}
        plain = ok(c.post("/v1/trust-domain-deployments", json=new_tdd), 201)["id"]
        servers = {
            "east": register_server(c, ids["tdd"], ids["cluster"], name="east"),
            "west-a": register_server(c, ids["tdd"], west, name="west-a"),
            "west-b": register_server(c, ids["tdd"], west, name="west-b"),
            "plain": register_server(c, plain, name="plain"),
        }

        def delivered() -> dict[str, int]:
            return {n: ok(sync(live_api.url, s))["config"]["version"] for n, s in servers.items()}

        policy = f"section: Rollout\nschema: v1\nspec:\n  stages:\n    - clusters: [{west}]\n"
        ok(put_config(c, TDD, ids["tdd"], policy))
        before = delivered()
        # A trust domain write reaches both deployments: the one without a policy at once.
        ok(put_config(c, "trust-domain", ids["td"], KEY_LIFECYCLE))
        after = delivered()
        assert after["plain"] > before["plain"]
        assert after["west-a"] == after["west-b"] == after["plain"]
        assert after["east"] == before["east"]
        for name in ("west-a", "west-b"):
            post_status(live_api.url, servers[name], status_report(version=after[name]))
        assert [a for _, a in promote(live_api)] == ["ready"]  # no bake: next pass
        assert [a for _, a in promote(live_api)] == ["advance"]
        post_status(live_api.url, servers["east"], status_report(version=after["plain"]))
        assert [a for _, a in promote(live_api)] == ["complete"]
        # A cluster write targets that cluster's servers only: west's stage selects none of
        # them and is passed at once.
        ok(put_config(c, "cluster", ids["cluster"], KEY_LIFECYCLE.replace("48h", "24h")))
        status = ok(c.get(f"/v1/trust-domain-deployments/{ids['tdd']}/rollout"))
        assert status["stage"]["name"] == "all" and status["counts"]["servers"] == 1
        assert [s["state"] for s in status["stages"]] == ["skipped", "current"]
        assert delivered()["east"] > after["east"]


def test_long_polls_wake_only_the_admitted_and_a_change_costs_the_same_reads_for_2_or_12(live_api):
    """Statements from a write through one promotion to the last reply: the same whether 2 or 12
    servers wait (housekeeping is off; the promoter's own reads are counted too)."""

    def run(n: int) -> int:
        with live_api.client() as c:
            ids = make_topology(c, f"n{n}.example")
            no_bake = "section: Rollout\nschema: v1\nspec:\n  stages:\n    - servers: 1\n"
            ok(put_config(c, TDD, ids["tdd"], KEY_LIFECYCLE + "---\n" + no_bake))
            servers = [register_server(c, ids["tdd"], name=f"s{i}") for i in range(n)]
            firsts = [ok(sync(live_api.url, s)) for s in servers]
            with ThreadPoolExecutor(n) as pool:
                held = [
                    pool.submit(
                        sync, live_api.url, s, f["config"]["version"], f["bundle"]["version"], 30
                    )
                    for s, f in zip(servers, firsts, strict=True)
                ]
                while live_api.state.cache.waiting < n:
                    threading.Event().wait(0.01)
                live_api.queries.reset()
                ok(put_config(c, TDD, ids["tdd"], KEY_MANAGER_AZURE))
                canary = held[0].result(10).json()
                assert canary["changed"] and "KeyManager" in canary["config"]["sections"]
                assert not any(h.done() for h in held[1:])  # the others keep waiting
                post_status(
                    live_api.url, servers[0], status_report(version=canary["config"]["version"])
                )
                promote(live_api)  # ready (no bake)
                promote(live_api)  # the final stage: everyone
                replies = [h.result(10).json() for h in held[1:]]
            assert all(r["changed"] for r in replies)
            count = live_api.queries.count
            for server, reply in zip(servers[1:], replies, strict=True):
                post_status(live_api.url, server, status_report(version=reply["config"]["version"]))
            assert [a for _, a in promote(live_api)] == ["complete"]  # out of the next count
            return count

    assert run(2) == run(12), live_api.queries.statements


def test_a_server_ahead_of_this_replica_is_not_sent_an_older_version(live_api):
    """A write this process did not hear of (another replica's, its notification late): a server
    holding the newer version makes this replica re-read instead of sending it back."""
    from controlplane.services.config import parse_upload, set_config
    from controlplane.store.unit_of_work import UnitOfWorkFactory

    with live_api.client() as c:
        ids = make_topology(c)
        server = register_server(c, ids["tdd"], name="s")
        first = ok(sync(live_api.url, server))
    with UnitOfWorkFactory(live_api.engine)() as uow:  # publishes to no cache
        set_config(uow, TDD, ids["tdd"], parse_upload(KEY_LIFECYCLE, TDD), actor="elsewhere")
    newer = first["config"]["version"] + 1
    reply = ok(sync(live_api.url, server, newer, first["bundle"]["version"], 0))
    assert reply["config"]["version"] == newer and reply["changed"] is False


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_replicas_advance_each_rollout_once_and_both_deliver_it(live_api, api_settings, clock):
    from controlplane.store.database import create_db_engine

    from support.live_api import serve_api

    other_engine = create_db_engine(live_api.engine.url.render_as_string(hide_password=False))
    try:
        with serve_api(other_engine, api_settings) as other, live_api.client() as c:
            fleets = [Fleet(live_api, c, td=f"td{i}.example") for i in range(3)]
            targets = [f.write() for f in fleets]
            for f, target in zip(fleets, targets, strict=True):
                f.report("a", target)
            start = threading.Barrier(2)

            def passes(api: Any) -> list[tuple[str, str]]:
                start.wait()
                return [m for _ in range(4) for m in promote(api)]

            def race() -> list[tuple[str, str]]:
                with ThreadPoolExecutor(2) as pool:
                    return sorted(m for moved in pool.map(passes, (live_api, other)) for m in moved)

            # Each rollout moves once per step, by one replica or the other.
            assert race() == sorted((f.ids["tdd"], "ready") for f in fleets)
            clock.advance(timedelta(minutes=11))
            assert race() == sorted((f.ids["tdd"], "advance") for f in fleets)
            audit = ok(c.get("/v1/audit", params={"limit": 200}))["items"]
            assert sum(e["action"] == "rollout.promote" for e in audit) == len(fleets)
            # Both replicas deliver the second stage (the other one heard of it by NOTIFY).
            for f, target in zip(fleets, targets, strict=True):
                b = f.servers["b"]
                deadline = threading.Event()
                for _ in range(500):
                    if ok(sync(other.url, b))["config"]["version"] == target:
                        break
                    deadline.wait(0.01)
                assert ok(sync(other.url, b))["config"]["version"] == target
                assert ok(sync(live_api.url, b))["config"]["version"] == target
                assert ok(sync(other.url, f.servers["c"]))["config"]["version"] == f.base
    finally:
        other_engine.dispose()
