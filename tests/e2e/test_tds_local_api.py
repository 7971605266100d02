"""The trust domain server's local API mints nothing for strangers (issue 11): by default it
listens only on a Unix socket in its data folder (0600); TCP is opt-in, loopback only unless
a flag says otherwise, and needs the bearer token from the data folder; issuance can be held
to path prefixes. Real `spirl-tds` processes against a real control plane."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from support.api import make_topology
from support.controlplane import start_control_plane
from support.tds import TD, SimClock, Tds, join_token, start_tds, tds_args

pytestmark = pytest.mark.e2e


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_unix_socket_by_default_token_over_tcp_and_loopback_only(tmp_path: Path) -> None:
    cp = start_control_plane(tmp_path)
    servers: list[Tds] = []
    try:
        ids = make_topology(cp.client(), TD)
        clock = SimClock(tmp_path / "clock")

        def start(name: str, *extra: str, join: bool = True) -> Tds:
            tds = start_tds(
                cp,
                tdd_id=ids["tdd"],
                cluster_id=ids["cluster"],
                tmp=tmp_path,
                name=name,
                clock=clock,
                join=join,
                extra_args=extra,
            )
            servers.append(tds)
            return tds

        # Default: the Unix socket in the data folder, owner-only, and no TCP listener.
        a = start("a", "--allowed-path-prefix", "/ns/prod")
        assert a.socket == str(a.data_dir / "api.sock") and a.url is None
        assert stat.S_ISSOCK(os.stat(a.socket).st_mode) and _mode(Path(a.socket)) == 0o600
        assert os.stat(a.socket).st_uid == os.geteuid()
        assert not (a.data_dir / "api_token").exists()
        ok = a.post("/v1/svid/jwt", {"spiffe_id": f"spiffe://{TD}/ns/prod/web", "audience": ["x"]})
        assert ok.status_code == 200, ok.text
        refused = a.post("/v1/svid/jwt", {"spiffe_id": f"spiffe://{TD}/ns/dev", "audience": ["x"]})
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"

        # TCP on request: every route but /healthz needs the token kept in the data folder.
        b = start("b", "--listen", "127.0.0.1:0")
        assert b.url and b.url.startswith("http://127.0.0.1:") and b.socket is None
        token_file = b.data_dir / "api_token"
        assert _mode(token_file) == 0o600 and b.token == token_file.read_text().strip()
        assert not (b.data_dir / "api.sock").exists()
        with httpx.Client(base_url=b.url, timeout=10) as anonymous:
            body = {"spiffe_id": f"spiffe://{TD}/web", "audience": ["x"]}
            for headers in ({}, {"Authorization": "Bearer not-the-token"}):
                r = anonymous.post("/v1/svid/jwt", json=body, headers=headers)
                assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
                assert anonymous.get("/v1/bundle", headers=headers).status_code == 401
            assert anonymous.get("/healthz").status_code == 200
        assert b.post("/v1/svid/jwt", body).status_code == 200
        assert b.token not in b.process.log_text()

        # A non-loopback address is refused without the flag, before the join token is spent.
        token = join_token(cp, ids["tdd"])
        args = tds_args(
            cp, tdd_id=ids["tdd"], data_dir=tmp_path / "tds-open", name="open", clock=clock
        )
        args += ["--listen", "0.0.0.0:0", "--join-token", token]
        refused_start = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert refused_start.returncode != 0
        assert "not a loopback address" in refused_start.stderr
        assert "--allow-non-loopback" in refused_start.stderr
        c = start("c", "--join-token", token, join=False)  # the token still registers
        assert c.status()["trust_domain"] == TD

        # The socket leaves with the server.
        a.stop()
        assert not Path(a.socket).exists()
    finally:
        for s in servers:
            s.stop()
        cp.stop()
