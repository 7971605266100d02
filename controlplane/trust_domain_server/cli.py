"""`spirl-tds run`: the trust domain server process.

Registers with the control plane (once; the identity is kept in the data dir), applies the
effective config, then serves the local API while a sync thread long-polls for changes, a
status thread reports, and a rotator thread rotates keys every 10 s. When ready it prints
one JSON line on stdout: {"socket": PATH, "pid": ..., "server_id": ...}, or with --listen
{"listen": "http://127.0.0.1:PORT", "token_file": PATH, ...}.

The local API is for trusted local callers (an agent, an operator): it does no workload
attestation. It listens on a Unix socket in the data folder (0600) unless --listen asks for TCP,
which must be a loopback address unless --allow-non-loopback, and then needs the bearer token
kept in the data folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from controlplane.fleet import STATUS_INTERVAL
from controlplane.keymanagers import KeyManagerContext, build_key_manager, key_manager_digest
from controlplane.keymanagers.base import KeyManager, KeyManagerError
from controlplane.keymanagers.default import load_or_create_kek
from controlplane.tls import CA_FILE_ENV, TlsConfigError, client_verify, plain_http_warning

from .api import create_app
from .clock import Clock, FileOffsetClock, SystemClock
from .issuer import IssuanceError, normalize_path_prefix
from .listener import ListenerPlan
from .server import TrustDomainServer
from .state import API_SOCKET_FILE, Identity, StateStore, load_or_create_key_identifier
from .sync import (
    Backoff,
    ControlPlaneClient,
    Deregistered,
    RegistrationRejected,
    StatusReporter,
    SyncLoop,
    fetch_once,
)

__all__ = ["main"]

log = logging.getLogger("controlplane.trust_domain_server")

ROTATE_INTERVAL = 10.0
DEREGISTERED_EXIT = 3  # the control plane deregistered this server; it must join again
JOIN_TOKEN_ENV = "SPIRL_JOIN_TOKEN"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spirl-tds", description="SPIFFE trust domain server")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the trust domain server")
    run.add_argument("--endpoint", required=True, help="control plane URL (https:// in production)")
    run.add_argument(
        "--ca-file",
        type=Path,
        default=None,
        metavar="PEM",
        help=f"trust only this CA for the control plane's certificate (default: ${CA_FILE_ENV}, "
        "else the system's trust store)",
    )
    token = run.add_mutually_exclusive_group()
    token.add_argument(
        "--join-token-file",
        type=Path,
        metavar="FILE",
        help=f"file holding the join token, only read at the first start (default: ${JOIN_TOKEN_ENV})",
    )
    token.add_argument(
        "--join-token",
        help="the join token itself: visible to every user of this host in `ps`; for tests "
        "(use --join-token-file or $SPIRL_JOIN_TOKEN)",
    )
    run.add_argument("--trust-domain-deployment", required=True, help="deployment id (tdd-...)")
    run.add_argument("--cluster", help="cluster id (c-...)")
    run.add_argument("--data-dir", required=True, type=Path)
    listener = run.add_mutually_exclusive_group()
    listener.add_argument(
        "--socket",
        type=Path,
        help=f"Unix socket of the local API (default: DATA_DIR/{API_SOCKET_FILE}, mode 0600)",
    )
    listener.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="serve the local API on TCP instead, with a bearer token (DATA_DIR/api_token); "
        "loopback only unless --allow-non-loopback; port 0 picks a free one",
    )
    run.add_argument(
        "--allow-non-loopback",
        action="store_true",
        help="let --listen bind a non-loopback address (the API does no workload attestation: "
        "anyone with the token gets any SPIFFE ID it may issue)",
    )
    run.add_argument(
        "--allowed-path-prefix",
        action="append",
        default=[],
        metavar="PATH",
        help="issue only SPIFFE IDs whose path is PATH or below it (repeatable), "
        "e.g. /ns/prod; default: any path in the trust domain",
    )
    run.add_argument(
        "--name", default=socket.gethostname(), help="server name shown by the control plane"
    )
    ident = run.add_mutually_exclusive_group()
    ident.add_argument(
        "--key-identifier-file",
        type=Path,
        help="server id for key managers (created with a UUID when missing)",
    )
    ident.add_argument("--key-identifier-value", help="fixed server id for key managers")
    run.add_argument("--kek-file", type=Path, help="key-encrypting key for the default key manager")
    run.add_argument("--log-level", default="INFO")
    # Testing only: move this process's clock by the number of seconds in a file.
    run.add_argument("--clock-file", type=Path, help=argparse.SUPPRESS)
    run.add_argument(
        "--rotate-interval", type=float, default=ROTATE_INTERVAL, help=argparse.SUPPRESS
    )
    run.add_argument("--long-poll-wait", type=int, default=30, help=argparse.SUPPRESS)
    run.add_argument(
        "--status-interval", type=float, default=STATUS_INTERVAL, help=argparse.SUPPRESS
    )
    return parser


def _register(args: argparse.Namespace, client: ControlPlaneClient, store: StateStore) -> Identity:
    identity = store.load_identity()
    if identity is not None:
        if identity.trust_domain_deployment_id != args.trust_domain_deployment:
            raise SystemExit(
                f"data dir {args.data_dir} belongs to deployment {identity.trust_domain_deployment_id}, "
                f"not {args.trust_domain_deployment}"
            )
        log.info(
            "registered earlier as %s (trust domain %s)", identity.server_id, identity.trust_domain
        )
        return identity
    join_token = _join_token(args)  # only now: a token file may be gone once the server joined
    if not join_token:
        raise SystemExit(
            f"first start: a join token is needed to register with the control plane "
            f"(--join-token-file FILE or ${JOIN_TOKEN_ENV})"
        )
    backoff = Backoff(cap=10.0)
    while True:
        try:
            identity = client.register(join_token, args.name, args.cluster)
            break
        except RegistrationRejected as exc:
            raise SystemExit(f"registration rejected by the control plane: {exc}") from None
        except httpx.HTTPError as exc:
            delay = backoff.next_delay()
            log.warning(
                "cannot reach control plane to register (%s); retrying in %.1fs", exc, delay
            )
            time.sleep(delay)
    if identity.trust_domain_deployment_id != args.trust_domain_deployment:
        raise SystemExit(
            f"join token is for deployment {identity.trust_domain_deployment_id}, "
            f"not {args.trust_domain_deployment}"
        )
    store.save_identity(identity)
    log.info("registered as %s in trust domain %s", identity.server_id, identity.trust_domain)
    return identity


def _join_token(args: argparse.Namespace) -> str | None:
    """The join token from --join-token-file, --join-token or $SPIRL_JOIN_TOKEN."""
    if args.join_token_file is not None:
        try:
            token = args.join_token_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SystemExit(
                f"cannot read --join-token-file {args.join_token_file}: {exc}"
            ) from None
        if not token:
            raise SystemExit(f"--join-token-file {args.join_token_file} is empty")
        return token
    if args.join_token:
        log.warning(
            "--join-token is visible to every user of this host (ps, /proc); "
            "use --join-token-file or $%s",
            JOIN_TOKEN_ENV,
        )
        return str(args.join_token)
    return os.environ.get(JOIN_TOKEN_ENV, "").strip() or None


def _rotator(server: TrustDomainServer, interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        try:
            server.rotate()
        except Exception:  # the rotator must outlive any single failure
            log.exception("rotation failed")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    clock: Clock = FileOffsetClock(args.clock_file) if args.clock_file else SystemClock()
    plain = plain_http_warning(args.endpoint, "the join token and this server's credential")
    if plain:
        log.warning(plain)
    try:
        verify = client_verify(args.ca_file)
    except TlsConfigError as exc:
        raise SystemExit(str(exc)) from None
    # Checked before registering, which spends the join token.
    listener = ListenerPlan.from_args(
        args.data_dir, args.socket, args.listen, args.allow_non_loopback
    )
    store = StateStore(args.data_dir)
    client = ControlPlaneClient(args.endpoint, verify=verify)
    identity = _register(args, client, store)
    try:
        prefixes = tuple(
            normalize_path_prefix(p, identity.trust_domain) for p in args.allowed_path_prefix
        )
    except IssuanceError as exc:
        raise SystemExit(f"--allowed-path-prefix: {exc.reason}") from None

    km_dir = args.data_dir / "keymanagers"
    if args.key_identifier_value:
        key_identifier = args.key_identifier_value
    else:
        key_identifier = load_or_create_key_identifier(
            args.key_identifier_file or (args.data_dir / "key-identifier")
        )
    try:
        kek = load_or_create_kek(km_dir, kek_file=args.kek_file)
    except KeyManagerError as exc:
        raise SystemExit(str(exc)) from None
    context = KeyManagerContext(
        data_dir=km_dir,
        kek=kek,
        trust_domain=identity.trust_domain,
        server_id=key_identifier,
        clock=clock.now,
    )

    def build(spec: Mapping[str, Any]) -> KeyManager:
        return build_key_manager(spec, context)

    server = TrustDomainServer(
        identity.trust_domain,
        clock,
        build,
        key_manager_digest,
        store,
        allowed_path_prefixes=prefixes,
    )
    server.restore()
    if server.applied_version is None:
        backoff = Backoff(cap=10.0)
        while server.attempted_version is None:
            try:
                fetch_once(client, identity, server)
            except Deregistered as exc:
                _forget_deregistered(store, identity, str(exc))
                raise SystemExit(DEREGISTERED_EXIT) from None
            except (httpx.HTTPError, ValueError) as exc:
                delay = backoff.next_delay()
                log.warning("cannot fetch the first config (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
    server.rotate()
    log.info("trust domain server %s ready; %s", identity.server_id, server.describe_keys())

    # Bound before any thread starts: a Unix socket is created under a process-wide umask.
    sock, where, token = listener.open(store)

    config = uvicorn.Config(
        create_app(server, token),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    http = uvicorn.Server(config)
    deregistered = threading.Event()
    deregistered_lock = threading.Lock()

    def on_deregistered(message: str) -> None:
        # Both the sync loop and the status reporter may hear it; act once.
        with deregistered_lock:
            if deregistered.is_set():
                return
            deregistered.set()
        _forget_deregistered(store, identity, message)
        http.should_exit = True

    reporter = StatusReporter(
        client,
        identity,
        server.status_report,
        heartbeat=args.status_interval,
        on_deregistered=on_deregistered,
    )
    server.add_listener(reporter.mark_dirty)
    sync = SyncLoop(
        client, identity, server, wait=args.long_poll_wait, on_deregistered=on_deregistered
    )
    stop = threading.Event()
    rotator = threading.Thread(
        target=_rotator, args=(server, args.rotate_interval, stop), name="tds-rotator", daemon=True
    )
    reporter.start()
    sync.start()
    rotator.start()

    def announce() -> None:
        while not http.started and not stop.is_set():
            time.sleep(0.01)
        if http.started:
            log.info("local API listening on %s", where.get("listen") or where["socket"])
            print(
                json.dumps({**where, "pid": os.getpid(), "server_id": identity.server_id}),
                flush=True,
            )

    threading.Thread(target=announce, name="tds-announce", daemon=True).start()

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(0)

    # uvicorn shuts down gracefully on SIGTERM, then re-raises it with the handler it found:
    # make that handler exit through `finally` so state is saved and managers are closed.
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        http.run(sockets=[sock])
    finally:
        stop.set()
        sync.stop()
        reporter.stop()
        server.close()
        listener.close()
        log.info("trust domain server %s stopped", identity.server_id)
    return DEREGISTERED_EXIT if deregistered.is_set() else 0


def _forget_deregistered(store: StateStore, identity: Identity, message: str) -> None:
    store.forget_identity()
    log.error(
        "the control plane deregistered this server (%s): %s. Stopping: its credential is revoked "
        "and its keys left the trust bundle. Its identity was removed from %s; to serve again, "
        "start it with a new --join-token",
        identity.server_id,
        message,
        store.data_dir,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return run(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
