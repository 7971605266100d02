"""`spirl-controlplane`: serve the API, migrate the database, create tokens."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from datetime import timedelta
from pathlib import Path

from controlplane import __version__
from controlplane.cli.args import seconds
from controlplane.fleet import (
    CONTACT_FLUSH_INTERVAL,
    DEFAULT_RETENTION,
    DEFAULT_STALE_AFTER,
    LONG_POLL_MAX_WAIT,
    FleetPolicy,
)

log = logging.getLogger("controlplane")

DEFAULT_LISTEN = "127.0.0.1:8080"


def _engine(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from controlplane.store.database import create_db_engine, resolve_database_url

    return create_db_engine(resolve_database_url(args.database_url, args.data_dir))


def _add_db_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("SPIRL_DATA_DIR", "data")),
        help="folder for the embedded SQLite database (default: ./data or $SPIRL_DATA_DIR)",
    )
    p.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL, e.g. postgresql://user@host/db (default: $SPIRL_DATABASE_URL, "
        "else SQLite in --data-dir)",
    )


def _current_engine(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """An engine on a current schema (migrating first with --migrate), or None after saying why."""
    from controlplane.store.database import SchemaOutdated, ensure_schema_current

    engine = _engine(args)
    try:
        ensure_schema_current(engine, auto_migrate=args.migrate)
    except SchemaOutdated as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return engine


def cmd_migrate(args: argparse.Namespace) -> int:
    from controlplane.store.database import migrate, schema_status

    engine = _engine(args)
    before, head = schema_status(engine)
    migrate(engine)
    print(f"database schema: {before or 'empty'} -> {head}")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from controlplane.services.auth import create_token
    from controlplane.store.unit_of_work import UnitOfWorkFactory

    engine = _current_engine(args)
    if engine is None:
        return 1
    with UnitOfWorkFactory(engine)() as uow:
        token, info = create_token(uow, args.role, args.name or f"{args.role}-token")
    if args.output == "json":
        print(json.dumps({"token": token, **info}))
    else:
        print(token)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from controlplane.cli.output import emit
    from controlplane.services.auth import list_tokens
    from controlplane.store.unit_of_work import UnitOfWorkFactory

    engine = _current_engine(args)
    if engine is None:
        return 1
    with UnitOfWorkFactory(engine)() as uow:
        tokens = list_tokens(uow)
    emit(
        tokens,
        args.output,
        columns=[
            ("ID", "id"),
            ("ROLE", "role"),
            ("NAME", "name"),
            ("CREATED", "created_at"),
            ("REVOKED", "revoked_at"),
        ],
    )
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from controlplane.domain import NotFound
    from controlplane.services.auth import revoke_token
    from controlplane.store.unit_of_work import UnitOfWorkFactory

    engine = _current_engine(args)
    if engine is None:
        return 1
    try:
        with UnitOfWorkFactory(engine)() as uow:
            result = revoke_token(uow, args.token_id)
    except NotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"revoked {result['id']} at {result['revoked_at']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from controlplane import logs
    from controlplane.api.app import Settings, create_app
    from controlplane.api.serving import (
        ConnectionLimits,
        build_server,
        event_loop_factory,
        fit_open_file_limit,
        listen_on,
    )
    from controlplane.tls import TlsConfigError, is_loopback_host, server_context

    logs.configure(args.log_level)
    if (args.tls_cert is None) != (args.tls_key is None):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    try:
        tls = server_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    except TlsConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    engine = _current_engine(args)
    if engine is None:
        return 1
    try:
        policy = FleetPolicy(
            stale_after=timedelta(seconds=args.server_stale_after),
            retention=timedelta(seconds=args.server_retention) if args.server_retention else None,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    settings = Settings(fleet=policy, bundle_expiry_interval=args.bundle_expiry_interval)
    if args.max_key_lifetime is not None:
        settings.max_key_lifetime = timedelta(seconds=args.max_key_lifetime)
    if args.clock_file:
        from controlplane.trust_domain_server.clock import FileOffsetClock

        settings.clock = FileOffsetClock(args.clock_file).now
    app = create_app(engine, settings)
    metrics = app.state.spirl.metrics
    metrics.describe(
        "spirl_connections_closed_total",
        "counter",
        "Connections the server closed to protect itself, by reason",
    )
    limits = ConnectionLimits(
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        write_timeout=args.write_timeout,
        max_connections=fit_open_file_limit(args.max_connections),
    )

    def closed(reason: str) -> None:
        metrics.inc("spirl_connections_closed_total", (("reason", reason),))

    server, guard = build_server(app, limits, tls=tls, on_close=closed)
    metrics.add_gauge_source(guard.gauges)
    sock = listen_on(args.listen)
    host, port = sock.getsockname()[:2]
    if tls is None and not is_loopback_host(host):
        _warn_plain_http(args.listen)
    metrics_sock = listen_on(args.metrics_listen) if args.metrics_listen else None
    scheme = "https" if tls is not None else "http"

    async def run() -> None:
        metrics_server = None
        metrics_task = None
        if metrics_sock is not None:
            metrics_server, _ = build_server(_metrics_only_app(app), limits, lifespan="off")
            metrics_task = asyncio.create_task(metrics_server.serve(sockets=[metrics_sock]))
            while not metrics_server.started:
                await asyncio.sleep(0.01)
        ready = asyncio.create_task(_announce(server, f"{scheme}://{host}:{port}", metrics_sock))
        await server.serve(sockets=[sock])  # started last, so it owns SIGTERM/SIGINT
        ready.cancel()
        if metrics_server is not None and metrics_task is not None:
            metrics_server.should_exit = True
            await metrics_task

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(run())
    return 0


def _warn_plain_http(listen: str) -> None:
    message = (
        f"serving plain HTTP on {listen}, which is reachable from other hosts: API tokens, "
        "join tokens and server credentials travel in clear. Serve with --tls-cert and "
        "--tls-key (see README, Operations), or listen on 127.0.0.1 behind a TLS proxy."
    )
    print(f"WARNING: {message}", file=sys.stderr, flush=True)
    log.warning(message, extra={"listen": listen})


async def _announce(server, url: str, metrics_sock: socket.socket | None) -> None:  # type: ignore[no-untyped-def]
    while not server.started:
        await asyncio.sleep(0.01)
    line = {"url": url, "pid": os.getpid(), "version": __version__, "console_url": f"{url}/ui/"}
    if metrics_sock is not None:
        mhost, mport = metrics_sock.getsockname()[:2]
        line["metrics_url"] = f"http://{mhost}:{mport}/metrics"
    print(json.dumps(line), flush=True)
    log.info("control plane listening", extra=line)


def _metrics_only_app(main_app):  # type: ignore[no-untyped-def]
    from starlette.responses import PlainTextResponse

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics":
            response = PlainTextResponse("not found; metrics are at /metrics\n", status_code=404)
        else:
            response = PlainTextResponse(
                main_app.state.spirl.metrics.render(), media_type="text/plain; version=0.0.4"
            )
        await response(scope, receive, send)

    return app


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number above 0: {text!r}")
    return int(text)


def _positive_seconds(text: str) -> float:
    value = seconds(text)  # like the other durations of serve: `5`, `5s`, `2m`
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600 seconds: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spirl-controlplane",
        description="The spirl control plane: stores validated KeyManager config and delivers it "
        "live to trust domain servers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the HTTP API",
        description="Run the HTTP API. Prints one JSON line {url, pid} on stdout once listening.",
    )
    _add_db_args(serve)
    serve.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        help=f"HOST:PORT (default {DEFAULT_LISTEN}; port 0 picks one)",
    )
    serve.add_argument(
        "--metrics-listen",
        default=None,
        help="HOST:PORT serving /metrics without a token (default: /metrics on --listen, token required)",
    )
    serve.add_argument(
        "--migrate", action="store_true", help="migrate an outdated database schema before serving"
    )
    serve.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        metavar="PEM",
        help="serve HTTPS with this certificate chain (PEM; with --tls-key). Clients verify it "
        "with the system trust store or --ca-file / $SPIRL_CA_FILE",
    )
    serve.add_argument(
        "--tls-key", type=Path, default=None, metavar="PEM", help="the certificate's private key"
    )
    serve.add_argument(
        "--max-connections",
        type=_positive_int,
        default=None,
        help="open connections (default 20000, or what the open-file limit allows). At the limit the oldest connection holding no "
        "request (half-open or idle) is closed to make room; requests in flight are never cut; "
        "when all hold one, new requests get 503 except /healthz and /readyz",
    )
    serve.add_argument(
        "--header-timeout",
        type=_positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="a connection is closed unless its request line and headers (and the TLS "
        "handshake) arrive within this time (default 5)",
    )
    serve.add_argument(
        "--body-timeout",
        type=_positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="a connection is closed unless a request's body arrives within this time after "
        "its headers (default 10). Long-polls send no body and are never cut",
    )
    serve.add_argument(
        "--write-timeout",
        type=_positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="a connection is closed when its client has not read its responses for this long "
        "while they fill the connection's write buffer (default 30). A waiting long-poll writes "
        "nothing and is never cut",
    )
    serve.add_argument(
        "--server-stale-after",
        type=seconds,
        default=DEFAULT_STALE_AFTER.total_seconds(),
        metavar="DURATION",
        help="a trust domain server not heard from for this long shows as UNREACHABLE "
        f"(default {DEFAULT_STALE_AFTER.total_seconds():g}s: two {LONG_POLL_MAX_WAIT:g}s "
        f"long-poll/status intervals plus the {CONTACT_FLUSH_INTERVAL:g}s contact write "
        "interval); e.g. 3m",
    )
    serve.add_argument(
        "--server-retention",
        type=seconds,
        default=DEFAULT_RETENTION.total_seconds(),
        metavar="DURATION",
        help="deregister servers unreachable for this long, so their clusters can be deleted "
        f"(default {int(DEFAULT_RETENTION.total_seconds() // 3600)}h; 0 turns it off)",
    )
    serve.add_argument(
        "--max-key-lifetime",
        type=seconds,
        default=None,
        metavar="DURATION",
        help="refuse keys servers report that live longer, e.g. 30d (default 365d, the longest "
        "KeyLifecycle allows)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    # Testing only: bundle key expiry follows the seconds in this file, like spirl-tds's.
    serve.add_argument("--clock-file", type=Path, help=argparse.SUPPRESS)
    serve.add_argument("--bundle-expiry-interval", type=float, default=10.0, help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    mig = sub.add_parser("migrate", help="create or upgrade the database schema")
    _add_db_args(mig)
    mig.set_defaults(func=cmd_migrate)

    token = sub.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    create = token_sub.add_parser(
        "create", help="create a token and print it on stdout (shown once; stored hashed)"
    )
    _add_db_args(create)
    create.add_argument("--role", required=True, choices=["admin", "viewer"])
    create.add_argument(
        "--name", default=None, help="a label for the audit log (default: <role>-token)"
    )
    create.add_argument("--migrate", action="store_true", help="migrate an outdated schema first")
    create.add_argument("-o", "--output", choices=["text", "json"], default="text")
    create.set_defaults(func=cmd_token_create)
    listing = token_sub.add_parser(
        "list", help="list admin and viewer tokens (ids, roles, names; never secrets)"
    )
    _add_db_args(listing)
    listing.add_argument("-o", "--output", choices=["table", "json"], default="table")
    listing.set_defaults(func=cmd_token_list, migrate=False)
    revoke = token_sub.add_parser(
        "revoke",
        help="revoke a token by id (running control planes stop accepting it within 30 s: "
        "they cache credentials that long)",
    )
    _add_db_args(revoke)
    revoke.add_argument(
        "token_id", metavar="TOKEN_ID", help="the id shown by `token list` (tok-...)"
    )
    revoke.set_defaults(func=cmd_token_revoke, migrate=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
