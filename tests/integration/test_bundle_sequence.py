"""The control plane's bundle sources (the public bundle endpoint and the bundle in the
long-poll) against the SPIFFE Trust Domain and Bundle spec §4.1.1: `spiffe_sequence` "MUST be
changed whenever the contents of the bundle are updated" and only grows; with several replicas
on one database, one number names one content everywhere. Also: what a server may report
(issue 9) and the bundle endpoint over HTTPS for federation (§5, https_web), on SQLite and
PostgreSQL, with py-spiffe parsing what is served.

Reports carry real keys: each reporting server is the trust domain server core
(`TrustDomainServer`, fake key manager) on the test's manual clock, which the control plane
shares for expiry (`Settings.clock`).
"""

from __future__ import annotations

import copy
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from unit.trust_domain_server.tds_fakes import FakeKeyManager

from controlplane.api.context import Settings
from controlplane.emulators.tls import ensure_tls_files
from controlplane.keymanagers import key_manager_digest
from controlplane.services.servers import MAX_ERROR_CHARS
from controlplane.trust_domain_server.clock import ManualClock
from controlplane.trust_domain_server.server import TrustDomainServer

from corpus.bad_reports import REPORT_CASES, T0
from support.api import make_topology, ok, register_server
from support.live_api import serve_app, user_token
from support.spiffe_verifier import SequenceLog, parse_bundle, validate_jwt_svid

TD = "example.org"
LIFECYCLE = {"section": "KeyLifecycle", "spec": {"x509CATTL": "12m", "jwtKeyTTL": "12m"}}


class Reporter:
    """A registered trust domain server core that reports its real keys."""

    def __init__(self, client: httpx.Client, tdd: str, name: str, clock: ManualClock) -> None:
        reg = register_server(client, tdd, name=name)
        self.server_id: str = reg["server_id"]
        self.credential: str = reg["credential"]
        self.core = TrustDomainServer(
            TD, clock, lambda spec: FakeKeyManager("default"), key_manager_digest
        )
        self.core.apply_config(
            {"version": 1, "sections": {"KeyLifecycle": {"document": LIFECYCLE}}}
        )
        self.core.rotate()

    def report(self, client: httpx.Client, body: dict[str, Any] | None = None) -> httpx.Response:
        return client.post(
            f"/v1/servers/{self.server_id}/status",
            json=body if body is not None else self.core.status_report(),
            headers={"Authorization": f"Bearer {self.credential}"},
        )

    def sync(self, client: httpx.Client, have: int | None, wait: float) -> dict[str, Any]:
        """A long-poll holding bundle version `have` (and the current config: this test
        changes none)."""
        params: dict[str, Any] = {"wait": wait, "config_version": 0}
        if have is not None:
            params["bundle_version"] = have
        return ok(
            client.get(
                f"/v1/servers/{self.server_id}/sync",
                params=params,
                headers={"Authorization": f"Bearer {self.credential}"},
                timeout=wait + 30,
            )
        )


def _public(client: httpx.Client, td_id: str) -> dict[str, Any]:
    return ok(client.get(f"/v1/trust-domains/{td_id}/bundle"))  # type: ignore[no-any-return]


def _bundle_version(engine: Engine, td_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT bundle_version FROM trust_domains WHERE id = :id"), {"id": td_id}
            ).scalar_one()
        )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def admin_token(engine: Engine) -> str:
    return user_token(engine)


@pytest.fixture
def replica(engine: Engine, clock: ManualClock) -> Iterator[str]:
    settings = Settings(clock=clock.now, bundle_expiry_interval=0.05)
    with serve_app(engine, settings) as (url, _):
        yield url


def test_every_change_of_the_stored_keys_takes_the_next_number(
    replica: str, admin_token: str, engine: Engine, clock: ManualClock
) -> None:
    log = SequenceLog()
    headers = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=replica, headers=headers, timeout=30) as c:
        ids = make_topology(c, TD)
        a, b = Reporter(c, ids["tdd"], "a", clock), Reporter(c, ids["tdd"], "b", clock)
        watcher = Reporter(c, ids["tdd"], "watcher", clock)  # reads the long-poll only

        def observe() -> dict[str, Any]:
            public = _public(c, ids["td"])
            log.record("public", "test", public)
            parse_bundle(public, TD)
            return public

        empty = observe()
        assert empty["keys"] == [] and empty["spiffe_refresh_hint"] == 300
        assert a.report(c).status_code == 204
        first = observe()
        assert len(first["keys"]) == 2 and first["spiffe_sequence"] > empty["spiffe_sequence"]
        assert first["spiffe_refresh_hint"] == 120  # 12-minute keys: a sixth of the lifetime
        assert a.report(c).status_code == 204  # a heartbeat: same keys, same number
        assert observe() == first
        assert b.report(c).status_code == 204
        both = observe()
        assert len(both["keys"]) == 4 and both["spiffe_sequence"] > first["spiffe_sequence"]

        # The long-poll carries the same number for the same content, and every key's id.
        delivered = watcher.sync(c, None, 0)["bundle"]
        log.record("long-poll", "watcher", delivered)
        assert delivered["spiffe_sequence"] == delivered["version"] == both["spiffe_sequence"]
        assert delivered["keys"] == both["keys"]
        reported = {k["kid"] for r in (a, b) for k in r.core.status_report()["keys"]}
        assert set(delivered["key_ids"]) == reported

        # Next keys are prepared at half the lifetime and reported.
        clock.advance(timedelta(minutes=7))
        for r in (a, b):
            assert r.core.rotate()
            assert r.report(c).status_code == 204
        prepared = observe()
        assert len(prepared["keys"]) == 8

        # The first keys expire: with no server reporting, the expiry task drops them, with
        # the next number, and the waiting long-poll hears of it.
        with ThreadPoolExecutor(1) as pool:
            have = prepared["spiffe_sequence"]
            pending = pool.submit(watcher.sync, c, have, 30)
            clock.advance(timedelta(minutes=6))
            woke = pending.result(timeout=30)["bundle"]
        log.record("long-poll", "watcher", woke)
        assert len(woke["keys"]) == 4 and woke["version"] > have
        expired = observe()
        assert expired["keys"] == woke["keys"]
        assert (
            expired["spiffe_sequence"]
            == woke["spiffe_sequence"]
            == _bundle_version(engine, ids["td"])
        )
    assert log.check() >= 5


def test_a_new_replica_and_a_restart_continue_the_numbers(
    engine: Engine, admin_token: str, clock: ManualClock
) -> None:
    headers = {"Authorization": f"Bearer {admin_token}"}
    settings = Settings(clock=clock.now, bundle_expiry_interval=0.05)
    with (
        serve_app(engine, settings) as (url, _),
        httpx.Client(base_url=url, headers=headers, timeout=30) as c,
    ):
        ids = make_topology(c, TD)
        a = Reporter(c, ids["tdd"], "a", clock)
        assert a.report(c).status_code == 204
        before = _public(c, ids["td"])
    with (
        serve_app(engine, settings) as (url, _),
        httpx.Client(base_url=url, headers=headers, timeout=30) as c,
    ):
        assert _public(c, ids["td"]) == before  # same content, same number after a restart
        clock.advance(timedelta(minutes=7))
        a.core.rotate()
        assert a.report(c).status_code == 204
        assert _public(c, ids["td"])["spiffe_sequence"] == before["spiffe_sequence"] + 1


def test_a_replica_that_has_not_heard_of_a_bundle_never_sends_an_older_one(
    engine: Engine, admin_token: str, clock: ManualClock
) -> None:
    """A server served by replica A moves to replica B before B heard of A's change (here B
    never hears: no notifications): B re-reads instead of sending the older bundle it holds."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    settings = Settings(clock=clock.now)
    with (
        serve_app(engine, settings) as (url_a, _),
        serve_app(engine, settings, listen_notifications=False) as (url_b, _),
    ):
        a_client = httpx.Client(base_url=url_a, headers=headers, timeout=30)
        b_client = httpx.Client(base_url=url_b, headers=headers, timeout=30)
        with a_client, b_client:
            ids = make_topology(a_client, TD)
            reporter = Reporter(a_client, ids["tdd"], "a", clock)
            watcher = Reporter(a_client, ids["tdd"], "watcher", clock)
            old = watcher.sync(b_client, None, 0)["bundle"]  # B caches the empty bundle
            assert reporter.report(a_client).status_code == 204
            new = watcher.sync(a_client, old["version"], 5)["bundle"]
            assert new["version"] > old["version"]
            reply = watcher.sync(b_client, new["version"], 0.5)
            assert reply["bundle"]["version"] == new["version"]
            if reply["changed"]:
                assert reply["bundle"]["keys"] == new["keys"]


@contextmanager
def one_reporting_server(
    engine: Engine, admin_token: str
) -> Iterator[tuple[httpx.Client, dict[str, str], Reporter]]:
    """A control plane whose clock reads the corpus's T0, an admin client, and a server `a`
    that has reported once."""
    clock = ManualClock(T0)
    headers = {"Authorization": f"Bearer {admin_token}"}
    with (
        serve_app(engine, Settings(clock=clock.now)) as (url, _),
        httpx.Client(base_url=url, headers=headers, timeout=30) as c,
    ):
        ids = make_topology(c, TD)
        a = Reporter(c, ids["tdd"], "a", clock)
        assert a.report(c).status_code == 204
        yield c, ids, a


def test_every_bad_report_of_the_corpus_is_refused_whole_and_stores_nothing(
    engine: Engine, admin_token: str
) -> None:
    """tests/corpus/bad_reports.py over HTTP: 400 with the pointer, and neither the server's
    status nor the bundle changes (the corpus is written for a clock at its T0)."""
    with one_reporting_server(engine, admin_token) as (c, ids, a):
        servers_before = ok(c.get(f"/v1/trust-domain-deployments/{ids['tdd']}/servers"))
        bundle_before = _public(c, ids["td"])
        good = a.core.status_report()
        good["keys"].sort(key=lambda k: k["kind"])  # [jwt, x509-ca], as the corpus expects
        for case in REPORT_CASES:
            report = copy.deepcopy(good)
            report["health"] = "UNHEALTHY"
            case.change(report["keys"])
            r = a.report(c, report)
            assert r.status_code == 400, (case.name, r.text)
            body = r.json()
            assert body["error"] == "bad_request" and body["pointer"] == case.pointer, case.name
            assert body["message"].startswith(case.pointer) and case.reason in body["message"]
        assert ok(c.get(f"/v1/trust-domain-deployments/{ids['tdd']}/servers")) == servers_before
        assert _public(c, ids["td"]) == bundle_before


# (field, value, pointer) of a report's status fields a broken or hostile server could send.
BAD_STATUS_FIELDS = [
    ("applied_version", "7", "/applied_version"),
    ("applied_version", True, "/applied_version"),
    ("desired_version", 2**31, "/desired_version"),
    ("refused_version", -1, "/refused_version"),
    ("applied_at", 1700000000, "/applied_at"),
    ("attempted_at", "9999-01-01T00:00:00Z", "/attempted_at"),
    ("error", {"nested": "object"}, "/error"),
    ("key_manager", ["default"], "/key_manager"),
    ("key_manager", {"digest": "d"}, "/key_manager/type"),
    ("key_manager", {"type": "default", "digest": 7}, "/key_manager/digest"),
    ("key_manager", {"type": "x" * 200, "digest": "d"}, "/key_manager/type"),
    ("key_manager", "default\x1b[2J", "/key_manager"),
]


def test_status_fields_of_the_wrong_type_are_refused_and_free_text_is_made_safe(
    engine: Engine, admin_token: str
) -> None:
    """Every status field is checked as the keys are: 400 naming the field, nothing stored.
    The error line is kept (a report is the heartbeat) but cut to its bound and printable: it
    reaches terminals through spirlctl tables."""
    with one_reporting_server(engine, admin_token) as (c, ids, a):
        servers = f"/v1/trust-domain-deployments/{ids['tdd']}/servers"
        before = ok(c.get(servers))
        for field, value, pointer in BAD_STATUS_FIELDS:
            r = a.report(c, dict(a.core.status_report(), health="UNHEALTHY", **{field: value}))
            assert r.status_code == 400, (field, value, r.text)
            assert r.json()["pointer"] == pointer, (field, value)
        key = a.core.status_report()["keys"][0]
        for name, value in [("state", "active\n"), ("key_type", 5)]:
            r = a.report(c, dict(a.core.status_report(), keys=[dict(key, **{name: value})]))
            assert r.status_code == 400 and r.json()["pointer"] == f"/keys/0/{name}"
        assert ok(c.get(servers)) == before

        error = "\x1b]0;pwned\x07vault said: " + "x" * 10_000 + "\u202e"
        report = dict(a.core.status_report(), health="UNHEALTHY", error=error)
        assert a.report(c, report).status_code == 204
        [stored] = ok(c.get(servers))["items"]
        assert stored["health"] == "UNHEALTHY" and stored["error"].startswith(" ]0;pwned vault")
        assert len(stored["error"]) == MAX_ERROR_CHARS and stored["error"].endswith("…")
        assert stored["error"].isprintable()


def test_a_kid_another_server_publishes_cannot_be_claimed(
    replica: str, admin_token: str, clock: ManualClock
) -> None:
    headers = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=replica, headers=headers, timeout=30) as c:
        ids = make_topology(c, TD)
        a, b = Reporter(c, ids["tdd"], "a", clock), Reporter(c, ids["tdd"], "b", clock)
        assert a.report(c).status_code == 204
        published = _public(c, ids["td"])
        a_jwt = next(k for k in a.core.status_report()["keys"] if k["kind"] == "jwt")
        b_report = b.core.status_report()
        b_jwt = next(k for k in b_report["keys"] if k["kind"] == "jwt")
        shadow = dict(b_jwt, kid=a_jwt["kid"])  # b's key under a's kid
        r = b.report(c, dict(b_report, keys=[shadow]))
        assert r.status_code == 400 and r.json()["pointer"] == "/keys/0/kid"
        assert "another server" in r.json()["message"]
        assert _public(c, ids["td"]) == published
        # The same key under the same kid (shared JWT keys) is one entry, not a conflict.
        assert b.report(c, dict(b_report, keys=[a_jwt])).status_code == 204
        assert _public(c, ids["td"]) == published


def test_the_bundle_endpoint_serves_https_for_federation(
    engine: Engine, admin_token: str, clock: ManualClock, tmp_path: Path
) -> None:
    """SPIFFE bundle endpoint, https_web profile: HTTPS, no authentication, the bundle as
    application/json. The consumer here trusts the test CA as its Web PKI."""
    tls = ensure_tls_files(tmp_path / "tls")
    trust = ssl.create_default_context(cafile=str(tls.ca_file))
    settings = Settings(clock=clock.now)
    with serve_app(engine, settings, tls=tls) as (url, _):
        headers = {"Authorization": f"Bearer {admin_token}"}
        with httpx.Client(base_url=url, headers=headers, verify=trust) as c:
            ids = make_topology(c, TD)
            a = Reporter(c, ids["tdd"], "a", clock)
            assert a.report(c).status_code == 204
        with httpx.Client(verify=trust) as federating:
            response = federating.get(f"{url}/v1/trust-domains/{ids['td']}/bundle")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        document = response.json()
        jwt_bundle, x509_bundle = parse_bundle(document, TD)
        assert len(jwt_bundle.jwt_authorities) == 1 and len(x509_bundle.x509_authorities) == 1
        token = a.core.issuer.issue_jwt(f"spiffe://{TD}/federated", ["peer"])
        svid = validate_jwt_svid(token, document, TD, "peer", at=clock.now())
        assert str(svid.spiffe_id) == f"spiffe://{TD}/federated"
        with pytest.raises(httpx.TransportError):  # TLS only: a plain-HTTP client gets nothing
            httpx.get(url.replace("https://", "http://") + "/healthz", timeout=5)


def test_replicas_on_postgres_serve_one_number_per_content(
    postgres_server: Any, clock: ManualClock
) -> None:
    """Two replicas, four servers reporting to both at once through several rotations, and
    observers reading the public endpoint and the long-poll of both while it happens."""
    from controlplane.store.database import create_db_engine, migrate

    url = postgres_server.create_database()
    engines = [create_db_engine(url), create_db_engine(url)]
    migrate(engines[0])
    admin = user_token(engines[0])
    settings = Settings(clock=clock.now, bundle_expiry_interval=0.05)
    log = SequenceLog()
    stop = threading.Event()
    headers = {"Authorization": f"Bearer {admin}"}
    try:
        with (
            serve_app(engines[0], settings) as (url_a, _),
            serve_app(engines[1], settings) as (
                url_b,
                _,
            ),
        ):
            clients = [
                httpx.Client(base_url=u, headers=headers, timeout=60) for u in (url_a, url_b)
            ]
            ids = make_topology(clients[0], TD)
            reporters = [Reporter(clients[0], ids["tdd"], f"s{i}", clock) for i in range(4)]
            watchers = [Reporter(clients[0], ids["tdd"], f"w{i}", clock) for i in range(2)]

            errors: list[BaseException] = []

            def read_public() -> None:
                # One reader alternating between the replicas, as behind a load balancer.
                while not stop.is_set():
                    for c in clients:
                        log.record("public", "reader", _public(c, ids["td"]))

            def follow(index: int) -> None:
                have = None
                while not stop.is_set():
                    reply = watchers[index].sync(clients[index], have, 1)
                    if reply["changed"]:
                        log.record("long-poll", f"watcher-{index}", reply["bundle"])
                        have = reply["bundle"]["version"]

            def guarded(fn: Any, *args: Any) -> None:
                try:
                    fn(*args)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=guarded, args=(read_public,))] + [
                threading.Thread(target=guarded, args=(follow, i)) for i in range(2)
            ]
            for t in threads:
                t.start()
            with ThreadPoolExecutor(4) as pool:
                for _ in range(9):  # 9 x 2 min of 12-minute keys: rotations, expiries
                    clock.advance(timedelta(minutes=2))
                    for r in reporters:
                        r.core.rotate()
                    results = list(
                        pool.map(
                            lambda ir: ir[1].report(clients[ir[0] % 2]).status_code,
                            enumerate(reporters),
                        )
                    )
                    assert results == [204] * 4
                    time.sleep(0.2)
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(timeout=30)
            assert errors == []
            final = [_public(c, ids["td"]) for c in clients]
            assert final[0] == final[1]
            assert final[0]["spiffe_sequence"] == _bundle_version(engines[0], ids["td"])
            for c in clients:
                c.close()
        assert log.check() >= 10
    finally:
        stop.set()
        for e in engines:
            e.dispose()
