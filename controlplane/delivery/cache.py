"""The snapshot cache: effective config and trust bundle per trust domain server, kept in memory.

Like go-control-plane's snapshot cache, this holds *what each node should have* and is separate
from the transport (the long-poll route). Versions decide what to send: a server that already
holds the current versions waits on an in-memory signal and costs no database read. A change
costs one reload of the one scope (or bundle) that changed, however many servers wait; a
poll that arrives while that reload is in flight waits for it, so the replica that answered a
write serves it from the next poll on (read your writes), at no extra read. A poll marks its trust
domain's signal count before it reads a snapshot and does not wait when a signal came meanwhile:
a change stored while it read is never left for the next one (one int per trust domain).
A deregistration (a `server` change, from this or another replica) is remembered in
`deregistered`, wakes that server's trust domain so its waiting long-poll ends with a 401, and
is passed to `on_deregistered` listeners (the credential cache); it costs no database read.

Staged rollouts: for a deployment with a `Rollout` policy the cache holds its rollout row
(`DeliveryPins`: the stable and target revision of every layer, and which servers are admitted
to the target) and decides per server which of the two configs it should have; both are built
from immutable config versions read once by revision. A write or a promotion costs one read of
the row (and of the one new version), however many servers wait. The row is read together with
the deployment's own config, so a write that adds a policy is never delivered without it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from controlplane.delivery.contacts import ContactLog
from controlplane.domain import CLUSTER, DEPLOYMENT, TRUST_DOMAIN, ScopeConfig
from controlplane.rollouts import DeliveryPins, Pins, pin_key
from controlplane.services import bundles as bundle_service
from controlplane.services import rollouts as rollout_service
from controlplane.services.bundles import StoredBundle
from controlplane.services.config import effective_dict
from controlplane.store.unit_of_work import Change, UnitOfWork

log = logging.getLogger(__name__)

ScopeKey = tuple[str, str]
Rollouts = dict[str, DeliveryPins | None]  # deployment id -> its rollout (None: no policy ever)
T = TypeVar("T")
COLD_READ_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class ServerPlacement:
    server_id: str
    deployment_id: str
    cluster_id: str | None
    trust_domain_id: str


@dataclass(frozen=True)
class Snapshot:
    """What one placement should have now. Shared by every waiting server of that placement."""

    config_version: int
    config: dict[str, Any]
    bundle: StoredBundle

    def unchanged_reply(self) -> bytes:
        return encode(
            {
                "changed": False,
                "config": {"version": self.config_version},
                "bundle": {"version": self.bundle.version},
            }
        )

    @functools.cached_property
    def changed_reply(self) -> bytes:
        """Encoded once, however many servers a change wakes."""
        return encode({"changed": True, "config": self.config, "bundle": self.bundle.delivery})


class DeliveryCache:
    def __init__(self, uow_factory: Callable[[], UnitOfWork]) -> None:
        self._uow = uow_factory
        self._scopes: dict[ScopeKey, ScopeConfig] = {}
        self._bundles: dict[str, StoredBundle] = {}
        self._placements: dict[str, ServerPlacement] = {}
        self._deployment_td: dict[str, str] = {}
        self._cluster_deployment: dict[str, str] = {}
        self._rollouts: Rollouts = {}
        self._revisions: dict[int, ScopeConfig] = {}  # config versions pinned by rollouts
        # Bumped whenever a scope, bundle, placement or rollout changes in the cache.
        self._generation = 0
        # (deployment, cluster, given the rollout's target) -> (generation, snapshot)
        self._snapshots: dict[tuple[str, str | None, bool], tuple[int, Snapshot]] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        # Signals sent per trust domain: a poll that built its snapshot while one was sent
        # (it was not waiting yet) does not wait for the next one.
        self._signals: dict[str, int] = {}
        self._announced: dict[tuple[str, str], int] = {}
        # Reloads in flight, by slot: a snapshot that needs one waits for it (read your writes).
        self._reloading: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self._cold_reads: asyncio.Semaphore | None = None
        self.contacts = ContactLog()
        # Servers deregistered while this process ran: their long-polls end with a 401.
        self.deregistered: set[str] = set()
        self._on_deregistered: list[Callable[[str], None]] = []
        self.waiting = 0
        self.deliveries = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._cold_reads = asyncio.Semaphore(COLD_READ_CONCURRENCY)

    async def cold_read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking database read with bounded concurrency.

        When thousands of servers connect at once, their first reads queue here instead of all
        sitting in the thread pool at the same time, which bounds memory and database load.
        """
        assert self._cold_reads is not None
        async with self._cold_reads:
            return await run_in_threadpool(fn, *args)

    async def _single_flight(self, key: tuple[str, str], fn: Callable[..., T], *args: Any) -> T:
        """One read per key at a time: concurrent callers share its result."""
        task = self._inflight.get(key)
        if task is None:
            assert self._loop is not None
            task = self._loop.create_task(self.cold_read(fn, *args))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        return await asyncio.shield(task)  # type: ignore[no-any-return]

    # -- reads ------------------------------------------------------------------------------

    async def placement(self, server_id: str) -> ServerPlacement:
        """Where a server sits; immutable after registration, so read once."""
        found = self._placements.get(server_id)
        if found is None:
            found = await self._single_flight(
                ("placement", server_id), self._load_placement, server_id
            )
            self._placements[server_id] = found
            self._deployment_td[found.deployment_id] = found.trust_domain_id
            if found.cluster_id:
                self._cluster_deployment[found.cluster_id] = found.deployment_id
        return found

    async def snapshot(self, placement: ServerPlacement) -> Snapshot:
        if self._reloading:
            await self._reloads_of(placement)
        # Fan-out fast path: nothing was stored since this placement's last snapshot.
        staged = self._rollouts.get(placement.deployment_id)
        target = staged is None or staged.for_server(placement.server_id)[0]
        memo_key = (placement.deployment_id, placement.cluster_id, target)
        cached = self._snapshots.get(memo_key)
        if cached is not None and cached[0] == self._generation:
            return cached[1]
        keys = self._layer_keys(placement)
        for key in keys:
            if key not in self._scopes or (key[0] == DEPLOYMENT and key[1] not in self._rollouts):
                [config], rows = await self._single_flight(
                    ("scope", "/".join(key)), self._load_scopes, [key]
                )
                self._store_scope(config)
                self._store_rollouts(rows)
        generation = self._generation
        staged = self._rollouts.get(placement.deployment_id)
        if staged is None:
            layers = [self._scopes[k] for k in keys]
            target = True
        else:
            target, pins = staged.for_server(placement.server_id)
            layers = await self._pinned(keys, pins)
        bundle = self._bundles.get(placement.trust_domain_id)
        if bundle is None:
            await self.catch_up_bundle(placement.trust_domain_id)
            bundle = self._bundles[placement.trust_domain_id]
        effective = effective_dict(layers)
        snapshot = Snapshot(effective["version"], effective, bundle)
        if generation == self._generation:
            self._snapshots[(placement.deployment_id, placement.cluster_id, target)] = (
                generation,
                snapshot,
            )
        return snapshot

    async def _reloads_of(self, placement: ServerPlacement) -> None:
        """Wait for the reloads in flight of what this placement reads: a change committed
        through this replica (its API answered) is what the next poll gets, not the state
        before it. Other replicas' changes arrive by notification, as ever."""
        slots = [
            ("config", f"{scope}/{scope_id}") for scope, scope_id in self._layer_keys(placement)
        ]
        slots += [("rollout", placement.deployment_id), ("bundle", placement.trust_domain_id)]
        pending = [task for slot in slots if (task := self._reloading.get(slot)) is not None]
        if pending:
            await asyncio.wait(pending)

    async def catch_up(self, placement: ServerPlacement) -> None:
        """Re-read a placement's config and rollout now: a server holds a newer version than
        this replica would send it (another replica may have served it; its notification is on
        its way), and must not be sent an older one on stale news. One read per poll that finds
        itself behind, shared by the polls of the placement that arrive meanwhile."""
        keys = self._layer_keys(placement)
        configs, rows = await self._single_flight(
            ("catch-up", "/".join(k[1] for k in keys)), self._load_scopes, keys
        )
        for config in configs:
            self._store_scope(config)
        self._store_rollouts(rows)

    async def _pinned(self, keys: list[ScopeKey], pins: Pins) -> list[ScopeConfig]:
        """The layers at the revisions a rollout pins (immutable: each is read once)."""
        wanted = {pins.get(pin_key(*key), 0) for key in keys} - {0}
        missing = sorted(wanted - set(self._revisions))
        if missing:
            found = await self._single_flight(
                ("revisions", ",".join(map(str, missing))), self._load_revisions, missing
            )
            self._revisions.update(found)
        layers = []
        for scope, scope_id in keys:
            revision = pins.get(pin_key(scope, scope_id), 0)
            empty = ScopeConfig(scope=scope, scope_id=scope_id, version=0, revision=0)
            layers.append(self._revisions.get(revision, empty) if revision else empty)
        return layers

    async def catch_up_bundle(self, trust_domain_id: str) -> None:
        """Re-read a trust domain's bundle now: a server holds a newer version than this
        replica has heard of (it was served by another replica whose notification is still on
        its way), and must not be sent an older one."""
        bundle = await self._single_flight(
            ("bundle", trust_domain_id), self._load_bundle, trust_domain_id
        )
        self._store_bundle(trust_domain_id, bundle)

    def signals_sent(self, trust_domain_id: str) -> int:
        """A mark to pass to wait_for_change, taken before reading a snapshot."""
        return self._signals.get(trust_domain_id, 0)

    async def wait_for_change(self, trust_domain_id: str, timeout: float, since: int) -> None:
        """Wait until something under this trust domain may have changed, or the timeout. A
        change signalled after the mark `since` (signals_sent) returns at once: it came while
        the caller was reading the snapshot it compared, so that snapshot may predate it."""
        assert self._loop is not None
        if self._signals.get(trust_domain_id, 0) != since:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        waiters = self._waiters.setdefault(trust_domain_id, set())
        waiters.add(waiter)
        timer = self._loop.call_later(timeout, _release, waiter)
        self.waiting += 1
        try:
            await waiter
        finally:
            self.waiting -= 1
            timer.cancel()
            waiters.discard(waiter)

    # -- change handling (runs on the event loop) --------------------------------------------

    def publish_threadsafe(self, changes: list[Change]) -> None:
        """Publisher for units of work: they commit in worker threads."""
        if self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self.apply_changes, changes)

    def on_deregistered(self, listener: Callable[[str], None]) -> None:
        """Call `listener(server_id)` on the event loop when a server is deregistered."""
        self._on_deregistered.append(listener)

    def apply_changes(self, changes: Iterable[Change]) -> None:
        for change in changes:
            if change.kind == "topology":
                self._forget(change.key)
                continue
            if change.kind == "server":
                self._server_deregistered(change.key)
                continue
            slot = (change.kind, change.key)
            if change.revision <= self._announced.get(slot, 0):
                continue  # already known (e.g. our own NOTIFY echoed back)
            self._announced[slot] = change.revision
            if self._is_cached(slot):
                self._schedule_reload(slot)

    def resync_all(self) -> None:
        """After a lost notification channel: re-read everything cached and wake every waiter."""
        self._announced.clear()
        for scope, scope_id in list(self._scopes):
            self._schedule_reload(("config", f"{scope}/{scope_id}"))
        for td_id in list(self._bundles):
            self._schedule_reload(("bundle", td_id))
        for deployment_id in list(self._rollouts):
            self._schedule_reload(("rollout", deployment_id))
        for td_id in list(self._waiters):
            self._signal(td_id)

    def _schedule_reload(self, slot: tuple[str, str]) -> None:
        if slot not in self._reloading:
            assert self._loop is not None
            self._reloading[slot] = self._loop.create_task(self._reload(slot))

    async def _reload(self, slot: tuple[str, str]) -> None:
        kind, key = slot
        try:
            while True:
                wanted = self._announced.get(slot, 0)
                if kind == "config":
                    scope, scope_id = key.split("/", 1)
                    [config], rows = await self.cold_read(self._load_scopes, [(scope, scope_id)])
                    self._store_scope(config)
                    self._store_rollouts(rows)
                    got = config.revision
                elif kind == "rollout":
                    pins = await self.cold_read(self._load_rollout, key)
                    self._store_rollouts({key: pins})
                    got = pins.generation if pins is not None else 0
                else:
                    bundle = await self.cold_read(self._load_bundle, key)
                    self._store_bundle(key, bundle)
                    got = bundle.version
                if got >= wanted or self._announced.get(slot, 0) == wanted:
                    break
        except Exception:
            log.exception("reloading %s %s failed; dropping it from the cache", kind, key)
            if kind == "config":
                scope, scope_id = key.split("/", 1)
                self._scopes.pop((scope, scope_id), None)
            elif kind == "rollout":
                self._rollouts.pop(key, None)  # read again with the deployment's config
                self._generation += 1
            else:
                self._bundles.pop(key, None)
        finally:
            self._reloading.pop(slot, None)

    def _store_scope(self, config: ScopeConfig) -> None:
        key = (config.scope, config.scope_id)
        old = self._scopes.get(key)
        if old is not None and old.revision >= config.revision and config.revision != 0:
            return
        self._scopes[key] = config
        self._generation += 1
        if old is not None and old.revision != config.revision:
            td_id = self._trust_domain_of(key)
            if td_id:
                self._signal(td_id)

    def _store_rollouts(self, rows: Rollouts) -> None:
        for deployment_id, pins in rows.items():
            known = deployment_id in self._rollouts
            old = self._rollouts.get(deployment_id)
            if pins is None:
                if not known:  # no policy: the deployment's servers get the current config
                    self._rollouts[deployment_id] = None
                continue  # a rollout row is never removed but with its deployment
            if old is not None and old.generation >= pins.generation:
                continue
            self._rollouts[deployment_id] = pins
            self._generation += 1
            referenced = {
                revision
                for staged in self._rollouts.values()
                if staged is not None
                for revision in (*staged.stable.values(), *staged.target.values())
            }
            for revision in set(self._revisions) - referenced:
                del self._revisions[revision]
            td_id = self._deployment_td.get(deployment_id)
            if td_id:
                self._signal(td_id)

    def _store_bundle(self, td_id: str, bundle: StoredBundle) -> None:
        old = self._bundles.get(td_id)
        if old is not None and old.version > bundle.version:
            return
        self._bundles[td_id] = bundle
        self._generation += 1
        if old is not None and old.version != bundle.version:
            self._signal(td_id)

    def _signal(self, td_id: str) -> None:
        self._signals[td_id] = self._signals.get(td_id, 0) + 1
        for waiter in self._waiters.pop(td_id, ()):
            _release(waiter)

    def _server_deregistered(self, server_id: str) -> None:
        self.deregistered.add(server_id)
        self.contacts.forget(server_id)
        for listener in self._on_deregistered:
            listener(server_id)
        placement = self._placements.pop(server_id, None)
        if placement is not None:  # a poll of this server may be waiting here: end it now
            self._signal(placement.trust_domain_id)

    def _forget(self, object_id: str) -> None:
        self._generation += 1
        for key in [k for k in self._scopes if k[1] == object_id]:
            del self._scopes[key]
        self._bundles.pop(object_id, None)
        self._rollouts.pop(object_id, None)
        self._deployment_td.pop(object_id, None)
        self._cluster_deployment.pop(object_id, None)

    def _is_cached(self, slot: tuple[str, str]) -> bool:
        kind, key = slot
        if kind == "bundle":
            return key in self._bundles
        if kind == "rollout":
            return key in self._rollouts
        scope, scope_id = key.split("/", 1)
        return (scope, scope_id) in self._scopes

    def _trust_domain_of(self, key: ScopeKey) -> str | None:
        scope, scope_id = key
        if scope == TRUST_DOMAIN:
            return scope_id
        if scope == DEPLOYMENT:
            return self._deployment_td.get(scope_id)
        deployment = self._cluster_deployment.get(scope_id)
        return self._deployment_td.get(deployment) if deployment else None

    @staticmethod
    def _layer_keys(placement: ServerPlacement) -> list[ScopeKey]:
        keys = [(TRUST_DOMAIN, placement.trust_domain_id), (DEPLOYMENT, placement.deployment_id)]
        if placement.cluster_id:
            keys.append((CLUSTER, placement.cluster_id))
        return keys

    # -- database reads (worker threads) ------------------------------------------------------

    def _load_placement(self, server_id: str) -> ServerPlacement:
        from controlplane.services.objects import get_deployment_row

        with self._uow() as uow:
            server = uow.repo.server(server_id)
            if server is None:
                from controlplane.domain import NotFound

                raise NotFound(f"server {server_id} not found")
            tdd = get_deployment_row(uow, server.deployment_id)
            return ServerPlacement(server.id, tdd.id, server.cluster_id, tdd.trust_domain_id)

    def _load_scopes(self, keys: list[ScopeKey]) -> tuple[list[ScopeConfig], Rollouts]:
        """Current configs, and the rollout of each deployment among them, read after them:
        a write that adds a policy commits both, so a new config read here never comes
        without its rollout."""
        with self._uow() as uow:
            configs = uow.repo.current_configs(keys)
            rows = {
                scope_id: rollout_service.delivery_pins(uow, scope_id)
                for scope, scope_id in keys
                if scope == DEPLOYMENT
            }
            return configs, rows

    def _load_rollout(self, deployment_id: str) -> DeliveryPins | None:
        with self._uow() as uow:
            return rollout_service.delivery_pins(uow, deployment_id)

    def _load_revisions(self, revisions: list[int]) -> dict[int, ScopeConfig]:
        with self._uow() as uow:
            return uow.repo.configs_at(revisions)

    def _load_bundle(self, td_id: str) -> StoredBundle:
        with self._uow() as uow:
            return bundle_service.read_bundle(uow, td_id)


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), default=str).encode()
