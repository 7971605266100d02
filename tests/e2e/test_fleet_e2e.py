"""End to end: trust domain servers come and go. A real control plane with a small staleness
window and retention period, real spirl-tds processes reporting often, and spirlctl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.api import make_topology, ok, sync
from support.controlplane import start_control_plane
from support.tds import SimClock, Tds, ca_certificates, jwt_kids, start_tds, wait_for

pytestmark = pytest.mark.e2e

# A window well above the servers' contact intervals (0.5 s reports, 1 s long-polls) so a busy
# machine does not make a live server look silent; retention leaves time to look at the
# unreachable server before it goes.
WINDOW = 5.0  # --server-stale-after
RETENTION = 20.0  # --server-retention
FAST = ["--long-poll-wait", "1", "--status-interval", "0.5"]


def test_stopped_servers_turn_unreachable_and_leave_by_hand_or_after_retention(tmp_path: Path):
    cp = start_control_plane(
        tmp_path,
        extra_args=[
            "--server-stale-after",
            f"{WINDOW:g}s",
            "--server-retention",
            f"{RETENTION:g}s",
        ],
    )
    servers: list[Tds] = []
    try:
        client = cp.client()
        ids = make_topology(client)
        west = ok(
            client.post(
                "/v1/clusters", json={"name": "west", "trust_domain_deployment_id": ids["tdd"]}
            ),
            201,
        )["id"]
        clock = SimClock(tmp_path / "clock")

        def start(name: str, cluster: str) -> Tds:
            tds = start_tds(
                cp,
                tdd_id=ids["tdd"],
                cluster_id=cluster,
                tmp=tmp_path,
                name=name,
                clock=clock,
                extra_args=FAST,
            )
            servers.append(tds)
            return tds

        a, b, c = start("a", ids["cluster"]), start("b", west), start("c", west)

        def states() -> dict[str, str]:
            items = client.get(f"/v1/trust-domain-deployments/{ids['tdd']}/servers").json()
            return {s["name"]: s["state"] for s in items["items"]}

        wait_for(lambda: states() == dict.fromkeys("abc", "HEALTHY"), what="three HEALTHY servers")
        table = cp.spirlctl("trust-domain", "deployment", "servers", "--id", ids["tdd"]).stdout
        assert table.split()[:4] == ["ID", "NAME", "CLUSTER", "STATE"] and "ago" in table

        def published() -> tuple[set[str], int]:
            """The bundle's JWT kids and its number of CA certificates (X.509 CA entries carry
            no kid: X509-SVID §6.1)."""
            bundle = httpx.get(f"{cp.url}/v1/trust-domains/{ids['td']}/bundle", timeout=10)
            return jwt_kids(bundle.json()), len(ca_certificates(bundle.json()))

        status = {s.server_id: s.status()["keys"] for s in (a, b, c)}
        kids = {sid: {k["kid"] for k in keys if k["kind"] == "jwt"} for sid, keys in status.items()}
        cas = {sid: sum(k["kind"] == "x509-ca" for k in keys) for sid, keys in status.items()}
        wait_for(
            lambda: published() == (set().union(*kids.values()), sum(cas.values())),
            what="every key published",
        )
        info = cp.spirlctl("trust-domain", "deployment", "server", "info", c.server_id).stdout
        assert (
            "STATE:" in info
            and "IN BUNDLE" in info
            and all(k["kid"] in info for k in status[c.server_id])
        )

        # By hand: c is refused at once, stops, and its keys leave the bundle.
        identity = json.loads((c.data_dir / "identity.json").read_text())
        out = cp.spirlctl("trust-domain", "deployment", "server", "delete", c.server_id).stdout
        assert f"deregistered server {c.server_id}" in out
        wait_for(lambda: c.process.proc.poll() is not None, what="c to stop")
        assert c.process.proc.returncode == 3
        assert "deregistered this server" in c.process.log_text()
        assert not (c.data_dir / "identity.json").exists()  # the next start joins again
        refused = sync(cp.url, {"server_id": c.server_id, "credential": identity["credential"]})
        assert refused.status_code == 401 and refused.json()["error"] == "server_deregistered"
        assert published() == (
            kids[a.server_id] | kids[b.server_id],
            cas[a.server_id] + cas[b.server_id],
        )
        wait_for(
            lambda: not jwt_kids(b.bundle()) & kids[c.server_id],
            what="c's keys gone from b's bundle",
        )
        # Joining again with a new join token makes it a new server, with the keys it kept.
        c2 = start("c", west)
        assert c2.server_id != c.server_id and c2.data_dir == c.data_dir
        wait_for(lambda: states().get("c") == "HEALTHY", what="c back as a new server")
        wait_for(lambda: kids[c.server_id] <= published()[0], what="c's keys published again")
        c2.stop()
        ok(client.delete(f"/v1/servers/{c2.server_id}"))

        # Its cluster is held by a, and says so.
        held = cp.spirlctl("cluster", "delete", ids["cluster"], check=False)
        assert held.returncode == 1 and a.server_id in held.stderr
        assert "server delete" in held.stderr and "--force" in held.stderr

        # a stops: UNREACHABLE within the window, while b stays HEALTHY.
        a.stop()
        wait_for(
            lambda: states() == {"a": "UNREACHABLE", "b": "HEALTHY"},
            timeout=WINDOW + 10,
            what="a UNREACHABLE",
        )
        metrics = cp.client().get("/metrics").text
        assert 'spirl_servers{state="UNREACHABLE"} 1' in metrics
        table = cp.spirlctl("trust-domain", "deployment", "servers", "--id", ids["tdd"]).stdout
        assert [ln.split()[3] for ln in table.splitlines()[1:]] == ["UNREACHABLE", "HEALTHY"]

        # Past the retention period a is deregistered on its own, and its cluster can go.
        wait_for(lambda: set(states()) == {"b"}, timeout=RETENTION + 10, what="a deregistered")
        assert cp.spirlctl("cluster", "delete", ids["cluster"]).returncode == 0
        assert published() == (kids[b.server_id], cas[b.server_id])
        audit: list[dict[str, Any]] = cp.spirlctl_json("audit", "list")
        removals = {
            e["details"]["server_id"]: e["actor"]
            for e in audit
            if e["action"] == "server.deregister"
        }
        assert removals == {
            c.server_id: "admin:admin-token",
            c2.server_id: "admin:admin-token",
            a.server_id: "system:retention",
        }
    finally:
        for s in servers:
            s.stop()
        cp.stop()
