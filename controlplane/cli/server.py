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


def _listen_socket(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"--listen must be HOST:PORT, not {listen!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only turns Nagle off (TCP_NODELAY) on sockets whose proto
    # says TCP; without it every small response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), int(port)))
    except OSError as exc:
        raise SystemExit(f"cannot listen on {listen}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


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
    import uvicorn

    from controlplane import logs
    from controlplane.api.app import Settings, create_app

    logs.configure(args.log_level)
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
    sock = _listen_socket(args.listen)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        log_config=None,
        timeout_graceful_shutdown=2,
        limit_concurrency=args.max_connections,
        backlog=2048,
        timeout_keep_alive=75,
        # No Server/Date headers: nothing needs them, and a fan-out writes thousands of replies.
        server_header=False,
        date_header=False,
    )
    server = uvicorn.Server(config)
    metrics_sock = _listen_socket(args.metrics_listen) if args.metrics_listen else None

    async def run() -> None:
        metrics_server = None
        metrics_task = None
        if metrics_sock is not None:
            metrics_app = _metrics_only_app(app)
            metrics_server = uvicorn.Server(
                uvicorn.Config(metrics_app, log_config=None, lifespan="off")
            )
            metrics_task = asyncio.create_task(metrics_server.serve(sockets=[metrics_sock]))
            while not metrics_server.started:
                await asyncio.sleep(0.01)
        ready = asyncio.create_task(_announce(server, host, port, metrics_sock))
        await server.serve(sockets=[sock])  # started last, so it owns SIGTERM/SIGINT
        ready.cancel()
        if metrics_server is not None and metrics_task is not None:
            metrics_server.should_exit = True
            await metrics_task

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(run())
    return 0


def _loop_factory():  # type: ignore[no-untyped-def]
    """uvloop when installed (it comes with uvicorn[standard]): cheaper wake-ups and writes."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _announce(server, host: str, port: int, metrics_sock: socket.socket | None) -> None:  # type: ignore[no-untyped-def]
    while not server.started:
        await asyncio.sleep(0.01)
    url = f"http://{host}:{port}"
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
        "--max-connections",
        type=int,
        default=20000,
        help="open connections before new ones get 503",
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
