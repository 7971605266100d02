"""Background work of one control plane process, beside the requests it serves.

- Long-poll contacts are written in batches (`delivery.contacts`): one statement every
  `FleetPolicy.contact_flush_interval` seconds, however many servers polled, so that every replica
  sees a server that long-polls only this one.
- Servers silent for longer than the retention period are deregistered
  (`services.fleet.deregister_silent_servers`, safe with several replicas at once).
- Join tokens expired for over a week are deleted (`services.auth.purge_join_tokens`), every
  JOIN_TOKEN_PURGE_SECONDS.
- Expired keys leave the trust bundles at their not-after (`delivery.bundle_expiry`).
- Staged rollouts are advanced (`services.rollouts.advance_all`: gates, bake times, halts),
  every `Settings.rollout_interval` seconds, on every replica (row locks with SKIP LOCKED).

Failures (the database restarting, say) are logged and retried at the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from controlplane import rollouts
from controlplane.api.context import AppState
from controlplane.delivery.bundle_expiry import BundleExpiry
from controlplane.domain import Unavailable
from controlplane.services import auth as auth_service
from controlplane.services import fleet as fleet_service
from controlplane.services import rollouts as rollout_service
from controlplane.services.rollouts import FleetView

log = logging.getLogger("controlplane.housekeeping")
JOIN_TOKEN_PURGE_SECONDS = 3600.0
T = TypeVar("T")


class Housekeeping:
    def __init__(self, state: AppState) -> None:
        self._state = state
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self._state.settings
        expiry = BundleExpiry(self._state.uow, settings.clock, settings.bundle_expiry_interval)
        self._tasks = [
            loop.create_task(self._run()),
            loop.create_task(self._promote_forever()),
            loop.create_task(expiry.run()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.write_contacts()  # what this process saw last is not lost at shutdown

    async def _run(self) -> None:
        policy = self._state.settings.fleet
        loop = asyncio.get_running_loop()
        flush_every, sweep_every = policy.contact_flush_interval, policy.sweep_interval
        next_sweep = loop.time() + sweep_every
        next_purge = loop.time() + JOIN_TOKEN_PURGE_SECONDS
        while True:
            await asyncio.sleep(min(flush_every, sweep_every) if sweep_every else flush_every)
            await self.write_contacts()
            if sweep_every and loop.time() >= next_sweep:
                next_sweep = loop.time() + sweep_every
                await self.sweep()
            if loop.time() >= next_purge:
                next_purge = loop.time() + JOIN_TOKEN_PURGE_SECONDS
                await self.purge_join_tokens()

    async def write_contacts(self) -> None:
        batch = self._state.cache.contacts.take_unwritten()
        if not batch:
            return

        def write() -> None:
            with self._state.uow() as uow:
                fleet_service.record_contacts(uow, batch)

        await _attempt(f"writing {len(batch)} long-poll contact times", write)

    async def sweep(self) -> list[str]:
        removed = await _attempt(
            "deregistering servers past the retention period",
            fleet_service.deregister_silent_servers,
            self._state.uow,
            self._state.settings.fleet,
            self._state.cache.contacts.snapshot(),
        )
        if removed:
            log.warning(
                "deregistered %d server(s) unreachable past the retention period: %s",
                len(removed),
                ", ".join(removed),
            )
        return removed or []

    async def purge_join_tokens(self) -> int:
        deleted = await _attempt(
            "deleting expired join tokens", auth_service.purge_join_tokens, self._state.uow
        )
        if deleted:
            log.info("deleted %d join token(s) expired for over a week", deleted)
        return deleted or 0

    async def _promote_forever(self) -> None:
        while True:
            await asyncio.sleep(self._state.settings.rollout_interval)
            await self.promote()

    async def promote(self) -> list[tuple[str, rollouts.Verdict]]:
        """One pass of the staged-rollout promoter."""
        # The contacts are copied once per pass, here on the event loop that owns them; each
        # rollout is judged at its own clock reading.
        state = self._state
        contacts = state.cache.contacts.snapshot()
        moved = await _attempt(
            "advancing staged rollouts",
            rollout_service.advance_all,
            state.uow,
            lambda: FleetView(state.settings.fleet, contacts, state.settings.clock()),
        )
        if moved is None:
            return []
        for deployment_id, verdict in moved:
            if verdict.action == rollouts.FAIL:
                self._state.metrics.inc("spirl_rollout_halts_total")
            elif verdict.action in (rollouts.ADVANCE, rollouts.COMPLETE_NOW):
                self._state.metrics.inc("spirl_rollout_promotions_total")
            if verdict.action != rollouts.READY:
                log.info(
                    "rollout %s",
                    verdict.action,
                    extra={"deployment_id": deployment_id, "reason": verdict.reason},
                )
        return moved


async def _attempt(what: str, work: Callable[..., T], *args: Any) -> T | None:
    """Run one task's database work off the event loop; None when it failed. An outage is left
    to the unit of work, which logs it once; anything else is logged here with its trace."""
    try:
        return await run_in_threadpool(work, *args)
    except Unavailable:
        log.debug("%s: database unavailable", what)
    except Exception:
        log.exception("%s failed", what)
    return None
