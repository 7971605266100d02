"""The server side of sync: a deregistration (401 server_deregistered) stops the loops once,
while any other failure is retried."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import httpx

from controlplane.trust_domain_server.state import Identity
from controlplane.trust_domain_server.sync import ControlPlaneClient, StatusReporter, SyncLoop

IDENTITY = Identity("tds-1", "secret", "example.org", "td-1", "tdd-1", None, "http://cp")
DEREGISTERED = {"error": "server_deregistered", "message": "this server was deregistered; join"}


def client(answers: list[tuple[int, dict[str, Any]]]) -> tuple[ControlPlaneClient, list[str]]:
    """A client whose control plane gives these answers in turn (the last one forever)."""
    calls: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        status, body = answers[min(len(calls), len(answers)) - 1]
        return httpx.Response(status, json=body)

    cp = ControlPlaneClient("http://cp")
    cp._client = httpx.Client(base_url="http://cp", transport=httpx.MockTransport(handle))
    return cp, calls


def test_sync_loop_stops_when_deregistered_and_retries_other_failures():
    cp, calls = client([(503, {"error": "unavailable"}), (401, DEREGISTERED)])
    heard: list[str] = []
    server = SimpleNamespace(desired_version=1, bundle={"version": 1}, pending_config=None)
    loop = SyncLoop(cp, IDENTITY, server, wait=0, on_deregistered=heard.append)  # type: ignore[arg-type]
    loop.backoff.first = 0.001
    loop.start()
    loop.join(timeout=10)
    assert not loop.is_alive()
    assert heard == ["this server was deregistered; join"]
    assert calls == ["/v1/servers/tds-1/sync"] * 2


def test_status_reporter_stops_when_deregistered():
    cp, calls = client([(401, DEREGISTERED)])
    heard = threading.Event()
    reporter = StatusReporter(
        cp, IDENTITY, lambda: {"health": "HEALTHY"}, on_deregistered=lambda _m: heard.set()
    )
    reporter.start()
    reporter.join(timeout=10)
    assert heard.is_set() and not reporter.is_alive() and calls == ["/v1/servers/tds-1/status"]


def test_an_unknown_credential_is_not_a_deregistration():
    cp, calls = client([(401, {"error": "unauthenticated", "message": "unknown token"})])
    heard: list[str] = []
    reporter = StatusReporter(cp, IDENTITY, lambda: {}, on_deregistered=heard.append)
    reporter.backoff.first = 0.001
    reporter.start()
    threading.Event().wait(0.2)
    reporter.stop()
    reporter.join(timeout=10)
    assert heard == [] and len(calls) >= 2  # retried
