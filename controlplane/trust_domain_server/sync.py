"""Talking to the control plane: registration with a join token, the long-poll sync loop,
and status reports. The control plane may be down at any time: every call backs off and
retries, and the server keeps serving from what it last applied."""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from controlplane import domain
from controlplane.fleet import STATUS_INTERVAL

from .server import TrustDomainServer
from .state import Identity

__all__ = [
    "Backoff",
    "ControlPlaneClient",
    "Deregistered",
    "RegistrationRejected",
    "StatusReporter",
    "SyncLoop",
]

log = logging.getLogger(__name__)

LONG_POLL_WAIT = 30
DEREGISTERED_CODE = domain.Deregistered.code  # the error code the API answers with


class RegistrationRejected(Exception):
    """The control plane refused the join token (bad, used or expired): retrying cannot help."""


class Deregistered(Exception):
    """The control plane deregistered this server: its credential is revoked for good."""


class Backoff:
    """Exponential backoff with full jitter, reset on success."""

    def __init__(self, first: float = 0.2, cap: float = 15.0) -> None:
        self.first = first
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * (2**self.attempt))
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


def _check_deregistered(response: httpx.Response) -> None:
    if response.status_code != 401:
        return
    try:
        body = response.json()
    except ValueError:
        return
    if isinstance(body, dict) and body.get("error") == DEREGISTERED_CODE:
        raise Deregistered(str(body.get("message") or "this server was deregistered"))


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        return f"{response.status_code} {body.get('error')}: {body.get('message')}"
    except ValueError:
        return f"{response.status_code} {response.text[:200]}"


class ControlPlaneClient:
    def __init__(
        self, endpoint: str, timeout: float = 10.0, verify: ssl.SSLContext | bool = True
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._timeout = timeout
        self._client = httpx.Client(base_url=self.endpoint, timeout=timeout, verify=verify)

    def close(self) -> None:
        self._client.close()

    def register(self, join_token: str, name: str, cluster_id: str | None) -> Identity:
        body: dict[str, Any] = {"name": name}
        if cluster_id:
            body["cluster_id"] = cluster_id
        response = self._client.post(
            "/v1/servers/register", json=body, headers={"Authorization": f"Bearer {join_token}"}
        )
        if response.status_code in (400, 401, 403, 404, 409):
            raise RegistrationRejected(_error_text(response))
        response.raise_for_status()
        data = response.json()
        return Identity(
            server_id=data["server_id"],
            credential=data["credential"],
            trust_domain=data["trust_domain"],
            trust_domain_id=data["trust_domain_id"],
            trust_domain_deployment_id=data["trust_domain_deployment_id"],
            cluster_id=data.get("cluster_id"),
            endpoint=self.endpoint,
        )

    def sync(
        self,
        identity: Identity,
        config_version: int | None,
        bundle_version: int | None,
        wait: int,
    ) -> dict[str, Any]:
        """A version of None means "I have nothing": the control plane answers at once."""
        params: dict[str, int] = {"wait": wait}
        if config_version is not None:
            params["config_version"] = config_version
        if bundle_version is not None:
            params["bundle_version"] = bundle_version
        response = self._client.get(
            f"/v1/servers/{identity.server_id}/sync",
            params=params,
            headers={"Authorization": f"Bearer {identity.credential}"},
            timeout=self._timeout + wait,
        )
        _check_deregistered(response)
        if response.status_code != 200:
            raise httpx.HTTPStatusError(
                f"sync: {_error_text(response)}", request=response.request, response=response
            )
        result: dict[str, Any] = response.json()
        return result

    def report(self, identity: Identity, body: dict[str, Any]) -> None:
        response = self._client.post(
            f"/v1/servers/{identity.server_id}/status",
            json=body,
            headers={"Authorization": f"Bearer {identity.credential}"},
        )
        _check_deregistered(response)
        if response.status_code >= 300:
            raise httpx.HTTPStatusError(
                f"status: {_error_text(response)}", request=response.request, response=response
            )


def fetch_once(client: ControlPlaneClient, identity: Identity, server: TrustDomainServer) -> None:
    """One immediate sync (no wait): used at first start, before serving."""
    reply = client.sync(identity, None, None, 0)
    _apply_reply(reply, server)


def _apply_reply(reply: dict[str, Any], server: TrustDomainServer) -> None:
    if not reply.get("changed"):
        return
    config = reply.get("config") or {}
    if "sections" in config and config.get("version") != server.desired_version:
        server.apply_config(config)
    bundle = reply.get("bundle") or {}
    if "keys" in bundle:
        server.set_bundle(bundle)


class SyncLoop(threading.Thread):
    """Long-polls GET /v1/servers/{id}/sync and applies what changed."""

    def __init__(
        self,
        client: ControlPlaneClient,
        identity: Identity,
        server: TrustDomainServer,
        wait: int = LONG_POLL_WAIT,
        retry_nack_every: float = 30.0,
        on_deregistered: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(name="tds-sync", daemon=True)
        self._client = client
        self._identity = identity
        self._server = server
        self._wait = wait
        self._retry_nack_every = retry_nack_every
        self._on_deregistered = on_deregistered or _log_deregistered
        self._stopping = threading.Event()
        self.backoff = Backoff()
        self.connected = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        last_retry = time.monotonic()
        while not self._stopping.is_set():
            server = self._server
            config_version = server.desired_version
            raw_bundle_version = server.bundle.get("version")
            bundle_version = int(raw_bundle_version) if raw_bundle_version is not None else None
            try:
                reply = self._client.sync(
                    self._identity, config_version, bundle_version, self._wait
                )
            except Deregistered as exc:
                self.connected.clear()
                self._on_deregistered(str(exc))
                return
            except (httpx.HTTPError, ValueError) as exc:
                self.connected.clear()
                delay = self.backoff.next_delay()
                log.warning("control plane sync failed (%s); retrying in %.1fs", exc, delay)
                self._stopping.wait(delay)
                continue
            if not self.connected.is_set():
                log.info("connected to control plane %s", self._client.endpoint)
                self.connected.set()
            self.backoff.reset()
            try:
                _apply_reply(reply, server)
            except Exception:  # never let one bad reply end the loop
                log.exception("applying sync reply failed")
            # A NACKed config is retried now and then: the key manager may have come back.
            if (
                server.pending_config is not None
                and time.monotonic() - last_retry >= self._retry_nack_every
            ):
                last_retry = time.monotonic()
                server.retry_pending()


class StatusReporter(threading.Thread):
    """Posts the status report when something changed, and as a heartbeat."""

    def __init__(
        self,
        client: ControlPlaneClient,
        identity: Identity,
        build_report: Callable[[], dict[str, Any]],
        heartbeat: float = STATUS_INTERVAL,
        on_deregistered: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(name="tds-status", daemon=True)
        self._client = client
        self._identity = identity
        self._build_report = build_report
        self._heartbeat = heartbeat
        self._on_deregistered = on_deregistered or _log_deregistered
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self.backoff = Backoff()

    def mark_dirty(self) -> None:
        self._dirty.set()

    def stop(self) -> None:
        self._stopping.set()
        self._dirty.set()

    def run(self) -> None:
        self._dirty.set()  # report once at start
        while not self._stopping.is_set():
            self._dirty.wait(self._heartbeat)
            if self._stopping.is_set():
                return
            self._dirty.clear()
            try:
                self._client.report(self._identity, self._build_report())
                self.backoff.reset()
            except Deregistered as exc:
                self._on_deregistered(str(exc))
                return
            except (httpx.HTTPError, ValueError) as exc:
                delay = self.backoff.next_delay()
                log.warning("status report failed (%s); retrying in %.1fs", exc, delay)
                self._dirty.set()
                self._stopping.wait(delay)


def _log_deregistered(message: str) -> None:
    log.error("control plane: %s; no longer syncing", message)
