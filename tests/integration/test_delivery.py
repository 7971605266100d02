"""Long-poll delivery: immediate on change, held otherwise, O(1) database reads per change."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.concurrency import run_in_threadpool

from support.api import (
    KEY_LIFECYCLE,
    KEY_MANAGER_AZURE,
    make_topology,
    ok,
    put_config,
    register_server,
    status_report,
    sync,
)

TDD = "trust-domain-deployment"


@pytest.fixture
def api_settings():  # type: ignore[no-untyped-def]
    """No background writes: these tests count the statements of polls and changes alone (the
    batched contact writes are measured in test_fleet_api.py)."""
    from controlplane.api.app import Settings

    return Settings(housekeeping=False)


def _sync(
    url: str,
    server: dict[str, Any],
    config_version: int | None,
    bundle_version: int | None,
    wait: float,
) -> dict[str, Any]:
    return ok(sync(url, server, config_version, bundle_version, wait))


def _wait_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_first_poll_is_immediate_and_carries_effective_config(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        ok(put_config(c, TDD, ids["tdd"], KEY_MANAGER_AZURE))
        ok(put_config(c, "cluster", ids["cluster"], KEY_LIFECYCLE))
        server = register_server(c, ids["tdd"], ids["cluster"])
    reply = _sync(live_api.url, server, None, None, wait=30)
    assert reply["changed"] is True
    sections = reply["config"]["sections"]
    assert sections["KeyManager"]["scope"] == TDD and sections["KeyLifecycle"]["scope"] == "cluster"
    assert reply["bundle"]["keys"] == []
    started = time.monotonic()
    again = _sync(
        live_api.url, server, reply["config"]["version"], reply["bundle"]["version"], wait=0.5
    )
    assert again["changed"] is False and "sections" not in again["config"]
    assert time.monotonic() - started >= 0.45


def test_waiting_poll_wakes_on_change(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        server = register_server(c, ids["tdd"])
        first = _sync(live_api.url, server, None, None, wait=0)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                _sync,
                live_api.url,
                server,
                first["config"]["version"],
                first["bundle"]["version"],
                30,
            )
            _wait_until(lambda: live_api.state.cache.waiting == 1)
            ok(put_config(c, TDD, ids["tdd"], KEY_MANAGER_AZURE))
            reply = pending.result(timeout=10)
    assert reply["changed"] is True
    assert reply["config"]["version"] > first["config"]["version"]
    assert "KeyManager" in reply["config"]["sections"]


def test_a_change_signalled_while_a_poll_reads_its_snapshot_is_not_left_for_the_next(live_api):
    """A poll reads its snapshot; before it starts waiting, a change is stored and signalled
    (no waiter yet). The poll answers with the change at once, not after its whole wait."""
    cache = live_api.state.cache
    read_snapshot = cache.snapshot
    with live_api.client() as c:
        ids = make_topology(c)
        server = register_server(c, ids["tdd"])
        first = _sync(live_api.url, server, None, None, wait=0)

        async def snapshot_then_a_change(placement):  # type: ignore[no-untyped-def]
            cache.snapshot = read_snapshot  # only the first read of this poll
            before = await read_snapshot(placement)
            signals = cache.signals_sent(placement.trust_domain_id)
            await run_in_threadpool(put_config, c, TDD, ids["tdd"], KEY_MANAGER_AZURE)
            for _ in range(1000):  # the reload of the change signals its trust domain
                if cache.signals_sent(placement.trust_domain_id) != signals:
                    break
                await asyncio.sleep(0.01)
            return before  # read before the change

        cache.snapshot = snapshot_then_a_change
        reply = ok(
            httpx.get(
                f"{live_api.url}/v1/servers/{server['server_id']}/sync",
                params={
                    "wait": 60,
                    "config_version": first["config"]["version"],
                    "bundle_version": first["bundle"]["version"],
                },
                headers={"Authorization": f"Bearer {server['credential']}"},
                timeout=20,  # before the fix: a ReadTimeout (the poll waited its 60 s)
            )
        )
    assert reply["changed"] is True and "KeyManager" in reply["config"]["sections"]


def _reads_for_one_change(live_api, c, ids, servers: list[dict[str, Any]], lifecycle: str) -> int:
    """Hold a long-poll per server, write once, and count SQL statements until all have replied."""
    firsts = [_sync(live_api.url, s, None, None, wait=0) for s in servers]
    with ThreadPoolExecutor(len(servers)) as pool:
        pending = [
            pool.submit(_sync, live_api.url, s, f["config"]["version"], f["bundle"]["version"], 30)
            for s, f in zip(servers, firsts, strict=True)
        ]
        _wait_until(lambda: live_api.state.cache.waiting == len(servers))
        live_api.queries.reset()
        ok(put_config(c, TDD, ids["tdd"], lifecycle))
        replies = [p.result(timeout=20) for p in pending]
    assert all(r["changed"] for r in replies)
    return live_api.queries.count


def test_a_change_costs_the_same_reads_for_1_or_12_waiting_servers(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        ok(
            put_config(c, TDD, ids["tdd"], KEY_LIFECYCLE.replace("12h", "3h"))
        )  # both measured writes update
        one = [register_server(c, ids["tdd"], name="solo")]
        many = [register_server(c, ids["tdd"], name=f"s{i}") for i in range(12)]
        reads_one = _reads_for_one_change(live_api, c, ids, one, KEY_LIFECYCLE)
        reads_many = _reads_for_one_change(
            live_api, c, ids, many, KEY_LIFECYCLE.replace("12h", "6h")
        )
    assert reads_one == reads_many, live_api.queries.statements
    assert reads_many <= 25


def test_a_poll_with_nothing_new_touches_no_database(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        ok(put_config(c, TDD, ids["tdd"], KEY_MANAGER_AZURE))
        server = register_server(c, ids["tdd"], ids["cluster"])
    first = _sync(live_api.url, server, None, None, wait=0)
    live_api.queries.reset()
    for _ in range(3):
        reply = _sync(
            live_api.url, server, first["config"]["version"], first["bundle"]["version"], wait=0.1
        )
        assert reply["changed"] is False
    assert live_api.queries.count == 0, live_api.queries.statements


def test_status_reports_build_the_bundle_and_wake_peers(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        a = register_server(c, ids["tdd"], name="a")
        b = register_server(c, ids["tdd"], name="b")
        first = _sync(live_api.url, b, None, None, wait=0)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                _sync, live_api.url, b, first["config"]["version"], first["bundle"]["version"], 30
            )
            _wait_until(lambda: live_api.state.cache.waiting == 1)
            not_after = datetime.now(UTC) + timedelta(hours=1)
            r = httpx.post(
                f"{live_api.url}/v1/servers/{a['server_id']}/status",
                json=status_report("kid-1", not_after),
                headers={"Authorization": f"Bearer {a['credential']}"},
            )
            assert r.status_code == 204, r.text
            reply = pending.result(timeout=10)
        assert [k["kid"] for k in reply["bundle"]["keys"]] == ["kid-1"]
        assert reply["bundle"]["keys"][0]["use"] == "jwt-svid"
        # The same key reported again by another server appears once.
        r = httpx.post(
            f"{live_api.url}/v1/servers/{b['server_id']}/status",
            json=status_report("kid-1", not_after),
            headers={"Authorization": f"Bearer {b['credential']}"},
        )
        assert r.status_code == 204
        public = httpx.get(f"{live_api.url}/v1/trust-domains/{ids['td']}/bundle").json()
        assert [k["kid"] for k in public["keys"]] == ["kid-1"]
        servers = ok(c.get(f"/v1/trust-domain-deployments/{ids['tdd']}/servers"))["items"]
        assert {s["name"]: s["health"] for s in servers} == {"a": "HEALTHY", "b": "HEALTHY"}
        assert all(s["applied_version"] == 1 and s["last_contact_at"] for s in servers)


def test_status_with_private_key_material_is_refused(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        a = register_server(c, ids["tdd"], name="a")
    report = status_report("kid-1", datetime.now(UTC) + timedelta(hours=1))
    report["keys"][0]["jwk"]["d"] = "secret"
    r = httpx.post(
        f"{live_api.url}/v1/servers/{a['server_id']}/status",
        json=report,
        headers={"Authorization": f"Bearer {a['credential']}"},
    )
    assert r.status_code == 400 and "private" in r.json()["message"]
    assert httpx.get(f"{live_api.url}/v1/trust-domains/{ids['td']}/bundle").json()["keys"] == []


def test_status_reports_keep_key_creation_time_and_key_manager_key_ids(live_api):
    """The fields the console's key timeline draws (reported since the console was added)."""
    with live_api.client() as c:
        ids = make_topology(c)
        a = register_server(c, ids["tdd"], name="a")
    headers = {"Authorization": f"Bearer {a['credential']}"}
    url = f"{live_api.url}/v1/servers/{a['server_id']}/status"

    def servers() -> list[dict[str, Any]]:
        with live_api.client() as c:
            return ok(c.get(f"/v1/trust-domain-deployments/{ids['tdd']}/servers"))["items"]

    # A server from before these fields still reports fine.
    old_style = status_report("kid-1", datetime.now(UTC) + timedelta(hours=1))
    assert httpx.post(url, json=old_style, headers=headers).status_code == 204
    (server,) = servers()
    assert server["clock_offset_seconds"] is None and server["keys"][0]["not_before"] is None

    created = datetime.now(UTC).replace(microsecond=0)
    report = status_report("kid-2", created + timedelta(hours=1))
    vault_key = "https://vault.example/keys/spire-key-kid-2/0123456789abcdef"
    report["keys"][0].update(
        not_before=created.isoformat(), key_type="ec-p256", provider_ref=vault_key
    )
    report["reported_at"] = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    assert httpx.post(url, json=report, headers=headers).status_code == 204
    (server,) = servers()
    (key,) = server["keys"]
    assert (key["kid"], key["not_before"], key["key_type"], key["provider_ref"]) == (
        "kid-2",
        created.isoformat(),
        "ec-p256",
        vault_key,
    )
    assert 590 <= server["clock_offset_seconds"] <= 610  # the server's clock runs 10 minutes ahead

    for field, value, where in (
        ("not_before", "yesterday", "/keys/0/not_before"),
        ("provider_ref", "x" * 2000, "/keys/0/provider_ref"),
        ("reported_at", "soon", "/reported_at"),
    ):
        bad = status_report("kid-3", created + timedelta(hours=1))
        bad["health"] = "UNHEALTHY"
        (bad if field == "reported_at" else bad["keys"][0])[field] = value
        refused = httpx.post(url, json=bad, headers=headers)
        assert refused.status_code == 400 and refused.json()["pointer"] == where, field
        assert [k["kid"] for k in servers()[0]["keys"]] == ["kid-2"]  # nothing stored
        assert servers()[0]["health"] == "HEALTHY"
