"""End to end: a real control plane, real trust domain servers (spirl-tds processes), a real
webhook key service. Time jumps through the servers' hidden --clock-file flag."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.emulators.keyservice import KeyServiceProcess, start_keyservice

from support.api import make_topology
from support.controlplane import ControlPlane, start_control_plane
from support.tds import (
    TD,
    SimClock,
    Tds,
    jwt_kids,
    kid_of,
    start_tds,
    verify_jwt,
    verify_x509,
    wait_for,
)

pytestmark = pytest.mark.e2e

H = timedelta(hours=1)


@dataclass
class Env:
    tmp: Path
    cp: ControlPlane
    keyservice: KeyServiceProcess
    clock: SimClock
    td_id: str
    tdd_id: str
    cluster_id: str
    servers: list[Tds]

    def start_tds(self, name: str, join: bool = True) -> Tds:
        tds = start_tds(
            self.cp,
            tdd_id=self.tdd_id,
            cluster_id=self.cluster_id,
            tmp=self.tmp,
            name=name,
            clock=self.clock,
            join=join,
        )
        self.servers.append(tds)
        return tds

    def set_key_manager(self, extension: str) -> int:
        path = self.tmp / f"km-{time.monotonic_ns()}.yaml"
        path.write_text(f"section: KeyManager\nschema: v1\nspec:\n  extensions:\n{extension}")
        out = self.cp.spirlctl(
            "config", "set", "cluster", "--id", self.cluster_id, str(path), "-o", "json"
        )
        return int(json.loads(out.stdout)["version"])

    def cp_bundle(self) -> dict[str, Any]:
        return httpx.get(f"{self.cp.url}/v1/trust-domains/{self.td_id}/bundle", timeout=10).json()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    cp = start_control_plane(tmp_path)
    keyservice = start_keyservice(tmp_path)
    servers: list[Tds] = []
    try:
        ids = make_topology(cp.client(), TD)
        env = Env(
            tmp_path,
            cp,
            keyservice,
            SimClock(tmp_path / "clock"),
            ids["td"],
            ids["tdd"],
            ids["cluster"],
            servers,
        )
        yield env
    finally:
        for s in servers:
            s.stop()
        keyservice.stop()
        cp.stop()
        if "env" in locals() and env.cp is not cp:
            env.cp.stop()  # a test restarted the control plane


def test_key_manager_swap_rotation_and_expiry_keep_svids_verifiable(env: Env) -> None:
    a, b = env.start_tds("a"), env.start_tds("b")
    pids = {a.process.pid, b.process.pid}
    default_kids = {k["kid"] for s in (a, b) for k in s.status()["keys"]}
    assert len(default_kids) == 4 and all(
        k["key_manager"]["type"] == "default" for s in (a, b) for k in s.status()["keys"]
    )

    # SVIDs at the longest TTL allowed (24h keys -> 4h).
    early = [(s.jwt("early", "4h"), s.x509("early", "4h")) for s in (a, b)]

    webhook = env.keyservice.namespace_url("tds-e2e")
    creates_before = env.keyservice.stats().get("create", 0)
    # How fast a change reaches servers is measured in benchmarks/propagation.py, not here: this
    # test asserts that both apply it live (same pids, no key created), whatever the machine load.
    version = env.set_key_manager(f'    webhook:\n      webhookURL: "{webhook}"\n')
    for s in (a, b):
        wait_for(
            lambda s=s: s.status()["applied_version"] == version,
            timeout=30.0,
            what=f"config version {version} on {s.server_id}",
        )
    for s in (a, b):
        st = s.status()
        assert st["key_manager"]["type"] == "webhook" and st["health"] == "HEALTHY"
        # A swap creates no key: the default keys keep signing.
        assert {k["kid"] for k in st["keys"]} <= default_kids
        assert kid_of(s.jwt("after-swap")) in default_kids
    assert env.keyservice.stats().get("create", 0) == creates_before
    assert pids == {a.process.pid, b.process.pid}  # nothing restarted
    assert a.process.proc.poll() is None and b.process.proc.poll() is None

    # Late in the old keys' life: SVIDs that live until just before the old keys expire.
    env.clock.jump_to(19 * H)
    late = [(s.jwt("late", "4h"), s.x509("late", "4h")) for s in (a, b)]
    assert all(kid_of(t) in default_kids for t, _ in late)

    # Rotation: the next keys are made by the webhook manager and activate at 20h.
    env.clock.jump_to(20 * H + timedelta(minutes=1))
    for s in (a, b):
        wait_for(
            lambda s=s: any(
                k["state"] == "active" and k["key_manager"]["type"] == "webhook"
                for k in s.status()["keys"]
            ),
            what="webhook keys active",
        )
        wait_for(
            lambda s=s: sum(k["key_manager"]["type"] == "webhook" for k in s.status()["keys"]) == 2,
            what="two webhook keys",
        )
    new_tokens = [s.jwt("rotated") for s in (a, b)]
    assert all(kid_of(t) not in default_kids for t in new_tokens)
    assert env.keyservice.stats().get("create", 0) == creates_before + 4

    # Every SVID still valid verifies against the control plane bundle and each server's bundle.
    wait_for(
        lambda: all(kid_of(t) in jwt_kids(env.cp_bundle()) for t in new_tokens),
        what="new keys in the control plane bundle",
    )
    now = env.clock.now()
    for bundle in (env.cp_bundle(), a.bundle(), b.bundle()):
        for token, chain in late:
            verify_jwt(token, bundle, now)
            verify_x509(chain, bundle, now)
        for token in new_tokens:
            verify_jwt(token, bundle, now)
    with pytest.raises(AssertionError):  # the 4h SVIDs from t0 have expired: the check bites
        verify_jwt(early[0][0], a.bundle(), now)

    # Just before the late SVIDs expire they still verify (old keys retired, still published);
    # after the old keys expire they leave.
    env.clock.jump_to(22 * H + timedelta(minutes=58))
    now = env.clock.now()
    for s in (a, b):
        for token, chain in late:
            verify_jwt(token, s.bundle(), now)
            verify_x509(chain, s.bundle(), now)
    env.clock.jump_to(24 * H + timedelta(minutes=1))
    for s in (a, b):
        wait_for(
            lambda s=s: all(k["key_manager"]["type"] == "webhook" for k in s.status()["keys"]),
            what="old default keys dropped",
        )
        own = s.status()["keys"]
        assert len(own) == 2 and not ({k["kid"] for k in own} & default_kids)
        assert "closing key manager" in s.process.log_text()
    assert {a.process.pid, b.process.pid} == pids


def test_unreachable_webhook_is_nacked_without_failed_issuance(env: Env) -> None:
    a, b = env.start_tds("a"), env.start_tds("b")
    failures: list[str] = []
    issued = [0]
    stop = threading.Event()

    def issue_forever() -> None:
        with a.client() as client_a, b.client() as client_b:
            while not stop.is_set():
                for client in (client_a, client_b):
                    r = client.post(
                        "/v1/svid/jwt",
                        json={"spiffe_id": f"spiffe://{TD}/load", "audience": ["x"]},
                    )
                    if r.status_code != 200:
                        failures.append(r.text)
                    issued[0] += 1

    worker = threading.Thread(target=issue_forever)
    worker.start()
    try:
        version = env.set_key_manager(
            '    webhook:\n      webhookURL: "http://127.0.0.1:9/keys"\n      timeout: "1s"\n'
        )
        for s in (a, b):
            st = wait_for(
                # attempted_version is set when the attempt starts; wait for its outcome.
                lambda s=s: (
                    (x := s.status())["attempted_version"] == version
                    and (x["health"] == "UNHEALTHY" or x["applied_version"] == version)
                    and x
                ),
                what="config attempted",
            )
            assert st["health"] == "UNHEALTHY" and "webhook" in st["error"]
            assert st["applied_version"] != version and st["key_manager"]["type"] == "default"

        def cp_view() -> list[dict[str, Any]]:
            return (
                env.cp.client()
                .get(f"/v1/trust-domain-deployments/{env.tdd_id}/servers")
                .json()["items"]
            )

        items = wait_for(
            lambda: (v := cp_view()) and all(i["health"] == "UNHEALTHY" for i in v) and v,
            what="control plane sees the NACK",
        )
        assert all("webhook" in i["error"] and i["applied_version"] != version for i in items)
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join()
    assert issued[0] > 20 and failures == []
    for s in (a, b):
        metrics = s.metrics()
        assert "tds_config_nacks_total 1" in metrics
        assert "tds_svid_failures_total{" not in metrics

    # A good config heals both.
    good = env.set_key_manager(
        f'    webhook:\n      webhookURL: "{env.keyservice.namespace_url("ok")}"\n'
    )
    for s in (a, b):
        wait_for(
            lambda s=s: (x := s.status())["applied_version"] == good and x["health"] == "HEALTHY",
            what="healed",
        )


def test_restart_while_control_plane_is_down_serves_same_keys(env: Env) -> None:
    a = env.start_tds("a")
    kids = {k["kid"] for k in a.status()["keys"]}
    token = a.jwt("before")
    port = int(env.cp.url.rsplit(":", 1)[1])
    env.cp.stop()
    env.servers.remove(a)

    # No join token: the identity and keys come from the data dir.
    a2 = a.restarted(env.tmp / "tds-a2.log")
    env.servers.append(a2)
    assert {k["kid"] for k in a2.status()["keys"]} == kids
    token2 = a2.jwt("after-restart")
    assert kid_of(token2) == kid_of(token)
    verify_jwt(token2, a2.bundle(), env.clock.now())

    # The control plane returns on the same address: the server catches up with a new config.
    env.cp = start_control_plane(
        env.tmp, admin_token=env.cp.admin_token, extra_args=["--listen", f"127.0.0.1:{port}"]
    )
    version = env.set_key_manager(
        f'    webhook:\n      webhookURL: "{env.keyservice.namespace_url("r")}"\n'
    )
    wait_for(lambda: a2.status()["applied_version"] == version, timeout=30, what="catch up")
