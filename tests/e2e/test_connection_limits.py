"""Thousands of half-open connections against a real `spirl-controlplane serve` process.

The attack from issue 9: with `--max-connections 200`, 250 half-open sockets made every request,
/healthz included, answer 503, and 3,000 stayed open for ever. Now a normal client, the health
probes and a server's long-poll are served throughout, and every half-open socket is closed.
A client that pipelines requests and never reads its replies is closed after `--write-timeout`.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from support.api import KEY_LIFECYCLE, make_topology, ok, poll_after, put_config, register_server
from support.controlplane import start_control_plane
from support.sockets import many_raw, not_reading, still_open

pytestmark = pytest.mark.e2e

HALF_OPEN = 2500
HEADER_TIMEOUT = 2
WRITE_TIMEOUT = 1


def closed_by(metrics: str, reason: str) -> int:
    found = re.search(rf'spirl_connections_closed_total{{reason="{reason}"}} (\d+)', metrics)
    return int(found.group(1)) if found else 0


def test_half_open_connections_cannot_lock_clients_out(tmp_path: Path) -> None:
    args = ["--max-connections", "200", "--header-timeout", str(HEADER_TIMEOUT)]
    args += ["--write-timeout", str(WRITE_TIMEOUT)]
    with start_control_plane(tmp_path, extra_args=args) as cp, cp.client() as admin:
        ids = make_topology(admin)
        server = register_server(admin, ids["tdd"])
        first = poll_after(cp.url, server, None, 0)
        port = int(cp.url.rsplit(":", 1)[1])
        with ThreadPoolExecutor(2) as pool:
            held = pool.submit(poll_after, cp.url, server, first, 60)  # waiting before the flood
            # ~60 KB replies to ~20 KB of pipelined requests that are never read.
            big = f"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {cp.admin_token}\r\n\r\n"
            stalled = not_reading(port, big.encode() * 200)

            # Connect and send nothing; part of a request line; headers that never end.
            payloads = [b"", b"GET /healthz HT", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"]
            socks = many_raw(port, [payloads[i % 3] for i in range(HALF_OPEN)])

            assert httpx.get(f"{cp.url}/healthz", timeout=10).status_code == 200
            assert httpx.get(f"{cp.url}/readyz", timeout=10).status_code == 200
            assert admin.get("/v1/trust-domains").status_code == 200
            during = pool.submit(
                poll_after, cp.url, server, first, 60
            )  # a long-poll during the flood

            # Every half-open socket is closed: evicted for newcomers or at the header timeout.
            assert still_open(socks) == []
            # The long-polls outlived the timeouts and still get the change.
            time.sleep(HEADER_TIMEOUT + 1)
            ok(put_config(admin, "trust-domain-deployment", ids["tdd"], KEY_LIFECYCLE))
            for poll in (held, during):
                reply = poll.result(timeout=30)
                assert reply["changed"] is True and "KeyLifecycle" in reply["config"]["sections"]
        metrics = admin.get("/metrics").text
    assert closed_by(metrics, "write_timeout") == 1
    assert still_open([stalled]) == []
    assert closed_by(metrics, "evicted") > 0
    assert closed_by(metrics, "header_timeout") > 0
    assert closed_by(metrics, "evicted") + closed_by(metrics, "header_timeout") >= HALF_OPEN
