"""Server lifecycle and rollouts over the real API, on SQLite and PostgreSQL: states, batched
contact writes, deregistration (also of a waiting long-poll and on another replica), the retention
sweep, forced deletes, and rollout status.

Silence is simulated by moving a server's recorded contact times into the past in the database
(what a stopped server leaves behind); real processes going silent are in tests/e2e.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, update

from controlplane.api.app import Settings
from controlplane.fleet import FleetPolicy
from controlplane.store.models import ServerRow

from support.api import (
    KEY_LIFECYCLE,
    jwt_key,
    make_topology,
    ok,
    post_status,
    put_config,
    register_server,
    status_report,
    sync,
)

TDD = "trust-domain-deployment"
WINDOW = timedelta(seconds=30)
RETENTION = timedelta(minutes=5)


@pytest.fixture
def api_settings() -> Settings:
    # Background work off: the tests below run it when they mean to (see `housekeeping`).
    return Settings(fleet=FleetPolicy(stale_after=WINDOW, retention=RETENTION), housekeeping=False)


def housekeeping(live_api, job: str) -> Any:  # type: ignore[no-untyped-def]
    """Run one housekeeping job ("write_contacts" or "sweep") on the app's event loop."""
    work = getattr(live_api.app.state.housekeeping, job)()
    return asyncio.run_coroutine_threadsafe(work, live_api.state.cache._loop).result(30)


def go_silent(engine: Engine, server: dict[str, Any], ago: timedelta) -> None:
    """What a server that stopped `ago` leaves behind: its last contact and report that old."""
    at = datetime.now(UTC) - ago
    with engine.begin() as conn:
        conn.execute(
            update(ServerRow)
            .where(ServerRow.id == server["server_id"])
            .values(last_contact_at=at, last_report_at=at, registered_at=at)
        )


def servers_by_name(client: httpx.Client, tdd: str) -> dict[str, dict[str, Any]]:
    items = ok(client.get(f"/v1/trust-domain-deployments/{tdd}/servers"))["items"]
    return {s["name"]: s for s in items}


def metric(client: httpx.Client, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no metric {line_start}")


def test_states_come_from_recent_reports_and_silence(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        register_server(c, ids["tdd"], name="quiet")
        ok_ = register_server(c, ids["tdd"], name="ok")
        sick = register_server(c, ids["tdd"], name="sick")
        gone = register_server(c, ids["tdd"], name="gone")
        assert post_status(live_api.url, ok_, status_report()).status_code == 204
        long_error = "config version 9 not applied: " + "the vault said no. " * 30
        report = status_report(health="UNHEALTHY", error=long_error)
        assert post_status(live_api.url, sick, report).status_code == 204
        assert post_status(live_api.url, gone, status_report()).status_code == 204
        go_silent(live_api.engine, gone, WINDOW + timedelta(seconds=5))

        servers = servers_by_name(c, ids["tdd"])
        assert {n: s["state"] for n, s in servers.items()} == {
            "quiet": "UNKNOWN",  # registered, in contact, no report yet
            "ok": "HEALTHY",
            "sick": "UNHEALTHY",
            "gone": "UNREACHABLE",
        }
        assert servers["gone"]["health"] == "HEALTHY"  # what it last said, no longer believed
        assert servers["gone"]["last_contact_seconds_ago"] >= WINDOW.total_seconds()
        assert servers["sick"]["error"] == long_error  # the full text stays in the API

        # A server that long-polls but stopped reporting is in contact, its health unknown.
        go_silent(live_api.engine, ok_, WINDOW + timedelta(seconds=5))
        ok(sync(live_api.url, ok_))
        assert servers_by_name(c, ids["tdd"])["ok"]["state"] == "UNKNOWN"
        assert metric(c, 'spirl_servers{state="UNREACHABLE"}') == 1
        assert metric(c, 'spirl_servers{state="UNKNOWN"}') == 2
        assert metric(c, 'spirl_servers{state="UNHEALTHY"}') == 1
        assert metric(c, 'spirl_servers{state="HEALTHY"}') == 0


def test_long_poll_contacts_are_written_in_one_batched_statement(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        servers = [register_server(c, ids["tdd"], name=f"s{i}") for i in range(5)]
    for server in servers:
        go_silent(live_api.engine, server, timedelta(hours=1))
    for _ in range(3):
        for server in servers:
            ok(sync(live_api.url, server))
    live_api.queries.reset()
    housekeeping(live_api, "write_contacts")
    # 15 polls of 5 servers: one UPDATE (executemany) in one transaction.
    written = [q for q in live_api.queries.statements if not q.startswith("BEGIN")]
    assert len(written) == 1 and written[0].startswith("UPDATE servers"), written
    with live_api.client() as c:
        states = {s["state"] for s in servers_by_name(c, ids["tdd"]).values()}
    assert states == {"UNKNOWN"}  # in contact again (no report in the last hour)
    live_api.queries.reset()
    housekeeping(live_api, "write_contacts")  # nothing new: nothing written
    assert live_api.queries.count == 0


def test_deregistration_ends_a_waiting_poll_and_withdraws_unshared_keys(live_api):
    shared = jwt_key("kid-shared")
    with live_api.client() as c:
        ids = make_topology(c)
        a = register_server(c, ids["tdd"], ids["cluster"], name="a")
        b = register_server(c, ids["tdd"], name="b")
        report_a = status_report(keys=[jwt_key("kid-a"), shared])
        assert post_status(live_api.url, a, report_a).status_code == 204
        assert post_status(live_api.url, b, status_report(keys=[shared])).status_code == 204
        before = httpx.get(f"{live_api.url}/v1/trust-domains/{ids['td']}/bundle").json()
        assert {k["kid"] for k in before["keys"]} == {"kid-a", "kid-shared"}
        first = ok(sync(live_api.url, a))
        info = ok(c.get(f"/v1/servers/{a['server_id']}"))
        assert {k["kid"]: k["in_bundle"] for k in info["keys"]} == {
            "kid-a": True,
            "kid-shared": True,
        }

        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(
                sync,
                live_api.url,
                a,
                first["config"]["version"],
                first["bundle"]["version"],
                30,
            )
            while live_api.state.cache.waiting < 1:
                threading.Event().wait(0.01)
            assert (
                c.delete(f"/v1/servers/{a['server_id']}", headers=_viewer(live_api)).status_code
                == 403
            )
            result = ok(c.delete(f"/v1/servers/{a['server_id']}"))
            ended = held.result(timeout=10)  # at once, not after the 30 s wait
        assert result["withdrawn_keys"] == ["kid-a"] and result["kept_keys"] == ["kid-shared"]
        assert ended.status_code == 401 and ended.json()["error"] == "server_deregistered"
        assert "join again" in ended.json()["message"]
        # The cached credential is gone too: every later call is refused the same way.
        for response in (post_status(live_api.url, a, report_a), sync(live_api.url, a)):
            assert response.status_code == 401
            assert response.json()["error"] == "server_deregistered"

        after = httpx.get(f"{live_api.url}/v1/trust-domains/{ids['td']}/bundle").json()
        assert {k["kid"] for k in after["keys"]} == {"kid-shared"}
        assert after["spiffe_sequence"] > before["spiffe_sequence"]
        assert set(servers_by_name(c, ids["tdd"])) == {"b"}
        assert c.get(f"/v1/servers/{a['server_id']}").json()["error"] == "not_found"
        assert c.delete(f"/v1/servers/{a['server_id']}").status_code == 404
        [event] = [e for e in ok(c.get("/v1/audit"))["items"] if e["action"] == "server.deregister"]
        assert event["actor"] == "admin:test-admin" and event["scope_id"] == ids["tdd"]
        assert event["details"]["server_id"] == a["server_id"]
        assert event["details"]["withdrawn_keys"] == ["kid-a"]
        assert a["credential"] not in str(event)
        # b still publishes the shared key: deregistering b too withdraws it.
        assert ok(c.delete(f"/v1/servers/{b['server_id']}"))["withdrawn_keys"] == ["kid-shared"]
        last = httpx.get(f"{live_api.url}/v1/trust-domains/{ids['td']}/bundle").json()
        assert last["keys"] == []


def _viewer(live_api) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": f"Bearer {live_api.viewer_token}"}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_deregistration_on_one_replica_ends_polls_and_credentials_on_another(
    live_api, api_settings
):
    from controlplane.store.database import create_db_engine

    from support.live_api import serve_api

    other_engine = create_db_engine(live_api.engine.url.render_as_string(hide_password=False))
    try:
        with serve_api(other_engine, api_settings) as other:
            with live_api.client() as c:
                ids = make_topology(c)
                server = register_server(c, ids["tdd"], name="s")
            first = ok(sync(other.url, server))  # the other replica caches its credential
            with ThreadPoolExecutor(1) as pool:
                held = pool.submit(
                    sync,
                    other.url,
                    server,
                    first["config"]["version"],
                    first["bundle"]["version"],
                    30,
                )
                while other.state.cache.waiting < 1:
                    threading.Event().wait(0.01)
                with live_api.client() as c:
                    ok(c.delete(f"/v1/servers/{server['server_id']}"))
                ended = held.result(timeout=10)
            assert ended.status_code == 401 and ended.json()["error"] == "server_deregistered"
            refused = post_status(other.url, server, status_report())
            assert refused.status_code == 401
            assert refused.json()["error"] == "server_deregistered"
    finally:
        other_engine.dispose()


def test_retention_deregisters_silent_servers_and_frees_their_cluster(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        silent = register_server(c, ids["tdd"], ids["cluster"], name="silent")
        alive = register_server(c, ids["tdd"], name="alive")
        assert (
            post_status(live_api.url, silent, status_report(keys=[jwt_key("k")])).status_code == 204
        )
        refused = c.delete(f"/v1/clusters/{ids['cluster']}")
        assert refused.status_code == 409 and refused.json()["error"] == "has_children"
        [holder] = refused.json()["holders"]
        assert holder["kind"] == "server" and holder["id"] == silent["server_id"]

        go_silent(live_api.engine, silent, RETENTION - timedelta(seconds=10))
        go_silent(live_api.engine, alive, RETENTION + timedelta(minutes=1))
        ok(sync(live_api.url, alive))  # alive long-polled here; not written to the database yet
        assert housekeeping(live_api, "sweep") == []  # neither qualifies

        go_silent(live_api.engine, silent, RETENTION + timedelta(seconds=10))
        assert housekeeping(live_api, "sweep") == [silent["server_id"]]
        assert set(servers_by_name(c, ids["tdd"])) == {"alive"}
        assert c.delete(f"/v1/clusters/{ids['cluster']}").status_code == 204
        bundle = httpx.get(f"{live_api.url}/v1/trust-domains/{ids['td']}/bundle").json()
        assert bundle["keys"] == []
        events = [e for e in ok(c.get("/v1/audit"))["items"] if e["action"] == "server.deregister"]
        assert [e["actor"] for e in events] == ["system:retention"]
        assert "retention" in events[0]["details"]["reason"]
    assert post_status(live_api.url, silent, status_report()).json()["error"] == (
        "server_deregistered"
    )


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_concurrent_sweeps_deregister_each_server_once(live_api):
    from controlplane.services.fleet import deregister_silent_servers
    from controlplane.store.database import create_db_engine
    from controlplane.store.unit_of_work import UnitOfWorkFactory

    with live_api.client() as c:
        ids = make_topology(c)
        servers = [register_server(c, ids["tdd"], name=f"s{i}") for i in range(12)]
    for server in servers:
        go_silent(live_api.engine, server, RETENTION * 2)
    url = live_api.engine.url.render_as_string(hide_password=False)
    engines = [create_db_engine(url) for _ in range(2)]
    policy = FleetPolicy(stale_after=WINDOW, retention=RETENTION)
    start = threading.Barrier(2)

    def sweep(engine: Engine) -> list[str]:
        start.wait()
        return deregister_silent_servers(UnitOfWorkFactory(engine), policy, {})

    try:
        with ThreadPoolExecutor(2) as pool:
            first, second = pool.map(sweep, engines)
    finally:
        for engine in engines:
            engine.dispose()
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(s["server_id"] for s in servers)
    with live_api.client() as c:
        audit = ok(c.get("/v1/audit", params={"limit": 100}))["items"]
    assert sum(e["action"] == "server.deregister" for e in audit) == len(servers)


def test_forced_deletes_deregister_servers_first_and_are_audited(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        in_cluster = register_server(c, ids["tdd"], ids["cluster"], name="east-1")
        loose = register_server(c, ids["tdd"], name="loose")

        refused = c.delete(f"/v1/trust-domain-deployments/{ids['tdd']}", params={"force": "true"})
        assert refused.status_code == 409  # clusters hold it: force does not delete clusters
        kinds = {(h["kind"], h["id"]) for h in refused.json()["holders"]}
        assert kinds == {
            ("cluster", ids["cluster"]),
            ("server", in_cluster["server_id"]),
            ("server", loose["server_id"]),
        }
        assert len(servers_by_name(c, ids["tdd"])) == 2  # nothing was done

        assert (
            c.delete(f"/v1/clusters/{ids['cluster']}", params={"force": "true"}).status_code == 204
        )
        assert set(servers_by_name(c, ids["tdd"])) == {"loose"}
        assert (
            c.delete(
                f"/v1/trust-domain-deployments/{ids['tdd']}", params={"force": "true"}
            ).status_code
            == 204
        )
        assert (
            c.delete(f"/v1/trust-domains/{ids['td']}", params={"force": "true"}).status_code == 400
        )
        audit = ok(c.get("/v1/audit"))["items"]
    deregs = {
        e["details"]["server_id"]: e["details"]["reason"]
        for e in audit
        if e["action"] == "server.deregister"
    }
    assert deregs == {
        in_cluster["server_id"]: f"forced delete of cluster {ids['cluster']}",
        loose["server_id"]: f"forced delete of trust domain deployment {ids['tdd']}",
    }
    [cluster_delete] = [e for e in audit if e["action"] == "cluster.delete"]
    assert cluster_delete["details"] == {
        "force": True,
        "deregistered_servers": [in_cluster["server_id"]],
    }
    for server in (in_cluster, loose):
        assert sync(live_api.url, server).json()["error"] == "server_deregistered"


def rollout(client: httpx.Client, scope: str, scope_id: str, **params: Any) -> dict[str, Any]:
    return ok(client.get(f"/v1/rollouts/{scope}/{scope_id}", params=params))


def test_rollout_status_counts_applied_refused_pending_and_unreachable(live_api):
    with live_api.client() as c:
        ids = make_topology(c)
        west = ok(
            c.post("/v1/clusters", json={"name": "west", "trust_domain_deployment_id": ids["tdd"]}),
            201,
        )["id"]
        servers = {
            name: register_server(c, ids["tdd"], cluster, name=name)
            for name, cluster in (("a", ids["cluster"]), ("b", ids["cluster"]), ("c", west))
        }
        assert c.get(f"/v1/rollouts/{TDD}/{ids['tdd']}").json()["error"] == "not_found"
        written = ok(put_config(c, TDD, ids["tdd"], KEY_LIFECYCLE))
        status = rollout(c, TDD, ids["tdd"])
        revision = status["revision"]
        assert (status["version"], status["phase"], status["done"]) == (1, "in_progress", False)
        assert status["counts"] == {
            "targeted": 3,
            "applied": 0,
            "refused": 0,
            "pending": 3,
            "unreachable": 0,
        }
        assert written["version"] == status["version"] == status["current_version"]

        effective = ok(sync(live_api.url, servers["a"]))["config"]["version"]
        assert effective == revision
        post_status(live_api.url, servers["a"], status_report(version=revision))
        nack = f"config version {revision} not applied: Key Vault refused"
        post_status(
            live_api.url,
            servers["b"],
            status_report(
                version=revision,
                applied_version=0,
                health="UNHEALTHY",
                error=nack,
                refused_version=revision,
            ),
        )
        status = rollout(c, TDD, ids["tdd"])
        assert status["phase"] == "refused" and not status["done"]
        assert status["counts"]["applied"] == 1 and status["counts"]["refused"] == 1
        assert [(s["name"], s["progress"], s["error"]) for s in status["servers"]] == [
            ("b", "refused", nack),
            ("c", "pending", None),
        ]

        # b applies it after all; c goes silent: done, c counted as unreachable.
        post_status(live_api.url, servers["b"], status_report(version=revision))
        post_status(live_api.url, servers["c"], status_report(version=revision - 1))
        assert rollout(c, TDD, ids["tdd"])["phase"] == "in_progress"
        go_silent(live_api.engine, servers["c"], WINDOW * 2)
        status = rollout(c, TDD, ids["tdd"])
        assert status["phase"] == "done" and status["done"]
        assert status["counts"]["unreachable"] == 1
        assert (
            status["servers"][0]["name"] == "c" and status["servers"][0]["state"] == "UNREACHABLE"
        )

        # Scopes target their servers: the cluster's two, or the whole trust domain.
        assert rollout(c, TDD, ids["tdd"], version=1)["revision"] == revision
        ok(put_config(c, "cluster", ids["cluster"], KEY_LIFECYCLE))
        cluster = rollout(c, "cluster", ids["cluster"])
        assert cluster["counts"]["targeted"] == 2 and cluster["phase"] == "in_progress"
        ok(put_config(c, "trust-domain", ids["td"], KEY_LIFECYCLE))
        assert rollout(c, "trust-domain", ids["td"])["counts"]["targeted"] == 3
        # A later version of any layer includes the earlier one.
        newest = rollout(c, "trust-domain", ids["td"])["revision"]
        for name in ("a", "b"):
            post_status(live_api.url, servers[name], status_report(version=newest))
        assert rollout(c, "cluster", ids["cluster"])["phase"] == "done"
        assert rollout(c, TDD, ids["tdd"], version=1)["current_version"] == 1
        assert c.get(f"/v1/rollouts/{TDD}/{ids['tdd']}", params={"version": 2}).status_code == 404
        assert c.get(f"/v1/rollouts/{TDD}/tdd-000000000000").status_code == 404
        assert c.get(f"/v1/rollouts/nowhere/{ids['tdd']}").status_code == 404
        empty = ok(
            c.post(
                "/v1/clusters", json={"name": "empty", "trust_domain_deployment_id": ids["tdd"]}
            ),
            201,
        )["id"]
        ok(put_config(c, "cluster", empty, KEY_LIFECYCLE))
        nobody = rollout(c, "cluster", empty)
        assert nobody["phase"] == "done" and nobody["counts"]["targeted"] == 0
        assert (
            c.get(f"/v1/rollouts/{TDD}/{ids['tdd']}", headers=_viewer(live_api)).status_code == 200
        )
