"""SPIFFE conformance of everything the project serves, checked by py-spiffe, on real processes:
a control plane (SQLite or PostgreSQL), two `spirl-tds` servers and a webhook key service.

Through two rotations of 24 h keys (a simulated clock shared by the servers and the control
plane's key expiry), a key manager swap (default -> webhook), a restart of a server and one of
the control plane:

- every bundle source (the control plane's bundle endpoint, its long-poll, each server's
  `/v1/bundle`) parses with py-spiffe and has the shape the specs require;
- every JWT-SVID still valid passes `JwtSvid.parse_and_validate`, every X.509-SVID parses
  with `X509Svid` and chains to the bundle's authorities, against every source;
- a poller reads every source all along: within one source one `spiffe_sequence` never names
  two key sets, and it never goes backwards (Trust Domain and Bundle spec §4.1.1).
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from controlplane.emulators.keyservice import KeyServiceProcess, start_keyservice

from support.api import make_topology, ok, register_server, sync
from support.controlplane import ControlPlane, start_control_plane
from support.spiffe_verifier import (
    SequenceLog,
    parse_bundle,
    validate_jwt_svid,
    validate_x509_svid,
)
from support.tds import TD, SimClock, Tds, ca_certificates, jwt_kids, kid_of, start_tds, wait_for

pytestmark = pytest.mark.e2e

H = timedelta(hours=1)
AUDIENCE = "conformance"


def cp_args(clock: SimClock) -> list[str]:
    """The control plane's flags here: the servers' simulated clock, a quick expiry tick."""
    return ["--clock-file", str(clock.path), "--bundle-expiry-interval", "0.2"]


@dataclass
class Svid:
    token: str
    chain: list[x509.Certificate]
    key: ec.EllipticCurvePrivateKey
    expires: datetime


@dataclass
class World:
    tmp: Path
    database_url: str
    cp: ControlPlane
    keyservice: KeyServiceProcess
    clock: SimClock
    ids: dict[str, str]
    watcher: dict[str, Any]  # a registered server identity that only reads the long-poll
    servers: dict[str, Tds] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def cp_bundle(self) -> dict[str, Any]:
        response = httpx.get(f"{self.cp.url}/v1/trust-domains/{self.ids['td']}/bundle", timeout=10)
        return ok(response)  # type: ignore[no-any-return]

    def long_poll_bundle(self) -> dict[str, Any]:
        return ok(sync(self.cp.url, self.watcher))["bundle"]  # type: ignore[no-any-return]

    def sources(self) -> dict[str, Callable[[], dict[str, Any]]]:
        with self.lock:
            servers = dict(self.servers)
        out: dict[str, Callable[[], dict[str, Any]]] = {
            "control plane bundle endpoint": self.cp_bundle,
            "control plane long-poll": self.long_poll_bundle,
        }
        for name, tds in servers.items():
            out[f"{name} /v1/bundle"] = tds.bundle
        return out

    def start_tds(self, name: str) -> Tds:
        tds = start_tds(
            self.cp,
            tdd_id=self.ids["tdd"],
            cluster_id=self.ids["cluster"],
            tmp=self.tmp,
            name=name,
            clock=self.clock,
        )
        with self.lock:
            self.servers[name] = tds
        return tds

    def restart_tds(self, name: str) -> Tds:
        tds = self.servers[name].restarted(self.tmp / f"tds-{name}-restarted.log")
        with self.lock:
            self.servers[name] = tds
        return tds

    def restart_control_plane(self) -> None:
        port = self.cp.url.rsplit(":", 1)[1]
        self.cp.stop()
        self.cp = start_control_plane(
            self.tmp,
            database_url=self.database_url,
            admin_token=self.cp.admin_token,
            extra_args=["--listen", f"127.0.0.1:{port}", *cp_args(self.clock)],
            name="controlplane-restarted",
        )


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[World]:
    clock = SimClock(tmp_path / "clock")
    cp = start_control_plane(
        tmp_path,
        database_url=database_url,
        extra_args=cp_args(clock),
    )
    keyservice = start_keyservice(tmp_path)
    w: World | None = None
    try:
        with cp.client() as c:
            ids = make_topology(c, TD)
            watcher = register_server(c, ids["tdd"], name="watcher")
        w = World(tmp_path, database_url, cp, keyservice, clock, ids, watcher)
        yield w
    finally:
        if w is not None:
            for tds in w.servers.values():
                tds.stop()
            w.cp.stop()
        cp.stop()
        keyservice.stop()


class Poller:
    """Reads every bundle source in a loop and records what it saw."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.log = SequenceLog()
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for source, fetch in self.world.sources().items():
                try:
                    document = fetch()
                except (httpx.HTTPError, OSError, AssertionError):
                    continue  # a process restarting
                self.log.record(source, "poller", document)
                self.reads += 1
            self._stop.wait(0.2)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _issue(world: World, ttl: str = "4h") -> list[Svid]:
    out = []
    for tds in world.servers.values():
        chain, key = tds.x509_with_key("workload", ttl)
        token = tds.jwt("workload", ttl, audience=AUDIENCE)
        out.append(Svid(token, chain, key, chain[0].not_valid_after_utc))
    return out


def _published_everywhere(world: World, svids: list[Svid]) -> None:
    """Wait until every source holds every signing key of `svids`: the control plane's (the
    replica's cache reloads just after the commit) and each server's (the control plane's
    bundle reaches it by long-poll)."""
    wanted_kids = {kid_of(s.token) for s in svids}
    wanted_cas = {s.chain[1] for s in svids}

    def published() -> bool:
        for fetch in world.sources().values():
            bundle = fetch()
            certs = {
                x509.load_der_x509_certificate(base64.b64decode(c)) for c in ca_certificates(bundle)
            }
            if not (wanted_kids <= jwt_kids(bundle) and wanted_cas <= certs):
                return False
        return True

    wait_for(published, timeout=60, what="the signing keys in every bundle")


def _validate_everywhere(world: World, svids: list[Svid]) -> int:
    """Every SVID still valid (a minute of margin) against every source, with py-spiffe."""
    at = world.clock.now()
    live = [s for s in svids if s.expires > at + timedelta(minutes=1)]
    for source, fetch in world.sources().items():
        document = fetch()
        parse_bundle(document, TD)
        for svid in live:
            try:
                validate_jwt_svid(svid.token, document, TD, AUDIENCE, at=at)
                validate_x509_svid(svid.chain, svid.key, document, TD, at=at)
            except Exception as exc:
                raise AssertionError(f"{source}: {type(exc).__name__}: {exc}") from exc
    return len(live)


def _settle(world: World) -> set[str]:
    """Wait until the control plane's bundle holds exactly the keys the servers publish (new
    ones merged, expired ones gone); returns the JWT kids."""

    def same() -> set[str] | None:
        keys = [k for s in world.servers.values() for k in s.status()["keys"]]
        kids = {k["kid"] for k in keys if k["kind"] == "jwt"}
        bundle = world.cp_bundle()
        cas = sum(k["kind"] == "x509-ca" for k in keys)
        return kids if jwt_kids(bundle) == kids and len(ca_certificates(bundle)) == cas else None

    return wait_for(same, timeout=60, what="the control plane bundle = the servers' keys")  # type: ignore[no-any-return]


def _swap_to_webhook(world: World) -> None:
    url = world.keyservice.namespace_url("conformance")
    document = f'section: KeyManager\nschema: v1\nspec:\n  extensions:\n    webhook:\n      webhookURL: "{url}"\n'
    path = world.tmp / "key-manager.yaml"
    path.write_text(document)
    world.cp.spirlctl("config", "set", "cluster", "--id", world.ids["cluster"], str(path))
    wait_for(
        lambda: all(s.status()["key_manager"]["type"] == "webhook" for s in world.servers.values()),
        timeout=30,
        what="the webhook key manager active on every server",
    )


def test_every_source_conforms_through_rotations_a_swap_and_restarts(world: World) -> None:
    world.start_tds("a")
    world.start_tds("b")
    svids: list[Svid] = []

    def stage() -> None:
        """Fresh SVIDs from every server; every live SVID against every source."""
        fresh = _issue(world)
        svids.extend(fresh)
        _published_everywhere(world, fresh)
        assert _validate_everywhere(world, svids) >= len(fresh)

    with Poller(world) as poller:
        first_keys = _settle(world)
        assert len(first_keys) == 2
        stage()
        _swap_to_webhook(world)  # a swap creates no key: the default keys keep signing
        stage()

        # First rotation: next keys prepared (by the webhook manager) at 12 h ...
        world.clock.jump_to(12 * H + timedelta(minutes=1))
        assert len(_settle(world)) == 4
        world.restart_tds("a")
        stage()
        world.clock.jump_to(19 * H)
        stage()  # SVIDs from the old keys, valid until 23 h
        late = svids[-2:]
        assert {kid_of(s.token) for s in late} <= first_keys
        # ... signing from 20 h; the old keys stay published until they expire at 24 h.
        world.clock.jump_to(20 * H + timedelta(minutes=1))
        wait_for(
            lambda: all(kid_of(s.jwt("probe")) not in first_keys for s in world.servers.values()),
            timeout=30,
            what="the webhook keys signing",
        )
        stage()
        assert all(s in svids and s.expires > world.clock.now() for s in late)

        world.restart_control_plane()
        # The first keys expire: they leave every bundle, the control plane's by its expiry.
        world.clock.jump_to(24 * H + timedelta(minutes=2))
        assert not _settle(world) & first_keys
        stage()

        # The next rotation, all on the webhook manager.
        for at in (32 * H + timedelta(minutes=2), 36 * H + timedelta(minutes=3)):
            world.clock.jump_to(at)
            _settle(world)
            stage()
        time.sleep(0.3)
    assert poller.reads > 50
    poller.log.check()
    for source, seen in poller.log.seen.items():
        assert len({n for _, n, _ in seen}) >= 4, (
            f"{source} barely moved: {sorted({n for _, n, _ in seen})}"
        )
