"""Slow, half-open and surplus connections against the real server layer (support.served).

The connection guard (controlplane/api/serving.py) is database-independent, so these run on
SQLite only. The many-connection case against a real `spirl-controlplane serve` process is in
tests/e2e/test_connection_limits.py.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from controlplane.api.app import create_app
from controlplane.api.identity import API_VERSION
from controlplane.api.serving import MAX_REQUEST_HEAD_BYTES, ConnectionLimits
from controlplane.emulators.tls import ensure_tls_files
from controlplane.tls import client_verify, server_context

from support.api import (
    KEY_LIFECYCLE,
    make_topology,
    ok,
    poll_after,
    put_config,
    register_server,
)
from support.live_api import user_token
from support.served import Served, serve_in_thread
from support.sockets import not_reading, raw, response_of, still_open
from support.tds import wait_for

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

FAST = ConnectionLimits(header_timeout=0.5, body_timeout=0.5)


@dataclass
class Api:
    served: Served
    admin_token: str
    app: Any
    verify: ssl.SSLContext | bool = True

    @property
    def url(self) -> str:
        return self.served.url

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
            verify=self.verify,
        )

    def guard_state(self) -> dict[str, int]:
        guard = self.served.guard
        return self.served.on_loop(
            lambda: {"open": guard.open, "busy": guard.busy, "pending": guard.pending}
        )


@pytest.fixture
def start_api(engine: Engine) -> Iterator[Callable[..., Api]]:
    admin = user_token(engine)
    with ExitStack() as stack:

        def start(limits: ConnectionLimits, tls: ssl.SSLContext | None = None, **kw: Any) -> Api:
            app = create_app(engine)
            served = stack.enter_context(serve_in_thread(app, limits, tls=tls))
            return Api(served, admin, app, **kw)

        yield start


def test_half_open_connections_are_closed_after_the_header_timeout(start_api):
    api = start_api(FAST)
    port = api.served.port
    half_open = [
        raw(port),  # connects, sends nothing
        raw(port, b"GET /healthz HT"),  # part of a request line
        raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"),  # headers never end
        raw(port, b"\r\n"),  # a stray line ending begins no request
    ]
    # A client that drips its headers slower than the timeout is closed too.
    dripper = raw(port, b"GET /healthz HTTP/1.1\r\n")
    for _ in range(3):
        time.sleep(0.25)
        try:
            dripper.sendall(b"X-Drip: 1\r\n")
        except OSError:
            break
    # Meanwhile the server serves.
    assert httpx.get(f"{api.url}/healthz").status_code == 200
    assert still_open([*half_open, dripper]) == []
    zero = {"open": 0, "busy": 0, "pending": 0}
    wait_for(lambda: api.guard_state() == zero, what="the guard to forget every connection")


def test_idle_keep_alive_connections_are_not_cut_by_the_header_timeout(start_api):
    api = start_api(FAST)
    sock = raw(api.served.port)
    for _ in range(2):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response_of(sock)[0] == 200
        time.sleep(1.0)  # twice the header timeout, idle between requests
    sock.close()


def test_a_long_poll_outlives_the_read_timeouts(start_api):
    api = start_api(FAST)
    with api.client() as c:
        ids = make_topology(c)
        server = register_server(c, ids["tdd"])
        first = poll_after(api.url, server, None, 0, api.verify)
        # Held past both timeouts: answered when its wait ends, not cut.
        unchanged = poll_after(api.url, server, first, 1.5, api.verify)
        assert unchanged["changed"] is False
        # Held past both timeouts again, then woken by a change.
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(poll_after, api.url, server, first, 30, api.verify)
            wait_for(lambda: api.app.state.spirl.cache.waiting == 1, what="the long-poll")
            time.sleep(1.5)
            ok(put_config(c, "trust-domain-deployment", ids["tdd"], KEY_LIFECYCLE))
            changed = pending.result(timeout=30)
    assert changed["changed"] is True
    assert "KeyLifecycle" in changed["config"]["sections"]


def test_a_slow_body_is_cut_after_the_body_timeout_and_nothing_is_stored(start_api, caplog):
    api = start_api(FAST)
    with api.client() as c:
        ids = make_topology(c)
    body = json.dumps({"yaml": KEY_LIFECYCLE}).encode()
    sock = raw(
        api.served.port,
        (
            f"PUT /v1/config/trust-domain/{ids['td']} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {api.admin_token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body[:10],
    )
    with caplog.at_level(logging.INFO):
        assert still_open([sock]) == []
        with api.client() as c:
            stored = ok(c.get(f"/v1/config/trust-domain/{ids['td']}"))
    assert stored["version"] == 0 and stored["sections"] == {}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("head", "piece"),
    [
        (b"", b"X-Filler: " + b"a" * 8192 + b"\r\n"),  # many headers
        (b"X-Big: ", b"a" * 8192),  # one header line that never ends (httptools buffers it)
    ],
    ids=["many-headers", "one-endless-header"],
)
def test_a_request_head_over_the_limit_gets_431_and_is_closed(start_api, head, piece):
    # A long header timeout: only the head limit can end this request.
    api = start_api(ConnectionLimits(header_timeout=60))
    sock = raw(api.served.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + head)
    try:
        for _ in range(MAX_REQUEST_HEAD_BYTES // len(piece) + 2):
            sock.sendall(piece)
    except OSError:
        pass  # the server may close while we still send
    status, headers, reply = response_of(sock)
    assert status == 431
    assert headers["spirl-api-version"] == API_VERSION  # a client can tell it is ours
    assert json.loads(reply)["error"] == "input_rejected"
    assert still_open([sock]) == []
    wait_for(lambda: api.guard_state()["open"] == 0, what="the guard to forget the connection")
    assert httpx.get(f"{api.url}/healthz").status_code == 200


def test_at_the_limit_idle_and_half_open_connections_make_room(start_api):
    api = start_api(ConnectionLimits(max_connections=4))
    # Two idle keep-alive connections, then two half-open ones, fill the four slots.
    idle = []
    for _ in range(2):
        sock = raw(api.served.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response_of(sock)[0] == 200
        idle.append(sock)
    half_open = [raw(api.served.port, b"GET /hea") for _ in range(2)]
    wait_for(lambda: api.guard_state()["open"] == 4, what="four open connections")
    # Each newcomer (kept open) makes room: half-open ones go first, then the oldest idle ones.
    with ExitStack() as stack:
        for _ in range(4):
            c = stack.enter_context(api.client())
            assert c.get("/v1/trust-domains").status_code == 200
        assert still_open(half_open, within=5) == []
        assert still_open(idle, within=5) == []
        assert api.guard_state() == {"open": 4, "busy": 0, "pending": 0}


def test_when_every_connection_holds_a_request_only_health_probes_get_through(start_api):
    api = start_api(ConnectionLimits(max_connections=3))
    with api.client() as c:
        ids = make_topology(c)
        servers = [register_server(c, ids["tdd"], name=f"s{i}") for i in range(3)]
    firsts = [poll_after(api.url, s, None, 0, api.verify) for s in servers]
    with ThreadPoolExecutor(3) as pool:
        polls = [
            pool.submit(poll_after, api.url, s, f, 3, api.verify)
            for s, f in zip(servers, firsts, strict=True)
        ]
        wait_for(lambda: api.app.state.spirl.cache.waiting == 3, what="three long-polls")
        with api.client() as c:
            refused = c.get("/v1/trust-domains")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["spirl-api-version"] == API_VERSION
        assert refused.json()["error"] == "unavailable"
        assert httpx.get(f"{api.url}/healthz").status_code == 200
        assert httpx.get(f"{api.url}/readyz").status_code == 200
        # The long-polls were not cut: each is answered when its wait ends.
        replies = [p.result(timeout=30) for p in polls]
    assert [r["changed"] for r in replies] == [False, False, False]
    with api.client() as c:
        assert c.get("/v1/trust-domains").status_code == 200


def test_tls_half_open_connections_are_closed_and_evicted(start_api, tmp_path: Path):
    files = ensure_tls_files(tmp_path / "tls")
    api = start_api(
        # The header timeout (which closes them all in the end) is longer than the eviction
        # check below, so that check sees the guard make room, not the timeout.
        ConnectionLimits(header_timeout=5, max_connections=3),
        tls=server_context(files.cert_file, files.key_file),
        verify=client_verify(files.ca_file),
    )
    # TCP connections that never start the TLS handshake.
    silent = [raw(api.served.port) for _ in range(3)]
    wait_for(lambda: api.guard_state()["open"] == 3, what="three connections")
    with api.client() as c:  # makes room by closing the oldest silent one
        assert c.get("/v1/trust-domains").status_code == 200
    assert still_open(silent[:1], within=2) == []
    assert still_open(silent) == []
    assert api.guard_state()["pending"] == 0


def big_requests(api: Api, count: int = 200) -> bytes:
    """`count` pipelined requests (~20 KB, fits in the socket buffers) for a ~60 KB document."""
    request = f"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api.admin_token}\r\n\r\n"
    return request.encode() * count


@pytest.mark.parametrize("use_tls", [False, True], ids=["http", "https"])
def test_a_client_that_stops_reading_is_closed_after_the_write_timeout(
    start_api, tmp_path: Path, use_tls: bool, caplog
):
    tls: ssl.SSLContext | None = None
    verify: ssl.SSLContext | None = None
    if use_tls:
        files = ensure_tls_files(tmp_path / "tls")
        tls, verify = server_context(files.cert_file, files.key_file), client_verify(files.ca_file)
    # Room for one long-poll and two requests, which two clients that do not read take.
    api = start_api(
        ConnectionLimits(write_timeout=0.5, max_connections=3), tls=tls, verify=verify or True
    )
    with api.client() as c:
        ids = make_topology(c)
        server = register_server(c, ids["tdd"])
    first = poll_after(api.url, server, None, 0, api.verify)
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(poll_after, api.url, server, first, 30, api.verify)
        wait_for(lambda: api.app.state.spirl.cache.waiting == 1, what="the long-poll")
        with caplog.at_level(logging.INFO):
            stalled = [not_reading(api.served.port, big_requests(api), verify) for _ in (1, 2)]
            wait_for(lambda: api.guard_state()["busy"] == 3, what="the stalled clients' requests")
            # Each held its request "in flight" for ever, and everyone else got 503; now each is
            # closed once its write buffer stayed full for the write timeout.
            wait_for(
                lambda: api.guard_state() == {"open": 1, "busy": 1, "pending": 0},
                what="the guard to close the clients that do not read",
            )
            assert still_open(stalled) == []
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        # A normal client is served (not 503), and the long-poll was not cut.
        with api.client() as c:
            assert c.get("/v1/trust-domains").status_code == 200
            ok(put_config(c, "trust-domain-deployment", ids["tdd"], KEY_LIFECYCLE))
        changed = poll.result(timeout=30)
    assert changed["changed"] is True


def test_pipelined_requests_keep_their_connections_slot(start_api):
    api = start_api(ConnectionLimits(max_connections=2))
    with api.client() as c:
        ids = make_topology(c)
        server = register_server(c, ids["tdd"])
    first = poll_after(api.url, server, None, 0, api.verify)
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(poll_after, api.url, server, first, 3, api.verify)
        wait_for(lambda: api.app.state.spirl.cache.waiting == 1, what="the long-poll")
        # One slot left: the connection's first request takes it, the pipelined second reuses it.
        request = f"GET /v1/trust-domains HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api.admin_token}\r\n"
        sock = raw(api.served.port, f"{request}\r\n{request}Connection: close\r\n\r\n".encode())
        replies = b""
        while chunk := sock.recv(65536):
            replies += chunk
        sock.close()
        assert poll.result(timeout=30)["changed"] is False
    assert re.findall(rb"HTTP/1.1 (\d+) ", replies) == [b"200", b"200"]
