"""`spirl-keyvault-emulator`: a loopback Azure Key Vault + Entra ID for tests and the demo.

Prints one JSON line (vault_url, ca_file, tenant_id, authority_host, control_url, pid, ...)
on stdout once it listens, then serves until SIGTERM or SIGINT. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import ssl
import sys
import threading
from pathlib import Path
from types import FrameType

from controlplane.emulators.tls import ensure_tls_files

from .app import EmulatorApp, EmulatorSettings
from .httpd import EmulatorHTTPServer
from .limits import Limits

__all__ = ["main"]

log = logging.getLogger("spirl.keyvault_emulator")

CONTROL_TOKEN_ENV = "SPIRL_KV_EMULATOR_CONTROL_TOKEN"


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError("--listen must be HOST:PORT")
    try:
        return host, int(port)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("--listen port must be an integer") from exc


def _parse_principal(value: str) -> tuple[str, list[str]]:
    name, sep, roles = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError("--principal must be NAME=ROLE[,ROLE]")
    return name, [r for r in (x.strip() for x in roles.split(",")) if r]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spirl-keyvault-emulator", description=__doc__)
    p.add_argument(
        "--listen", type=_parse_listen, default=("127.0.0.1", 0), help="HOST:PORT (0 = free port)"
    )
    p.add_argument("--sku", choices=("premium", "standard"), default="premium")
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument(
        "--tenant-dir",
        type=Path,
        default=None,
        help="share one tenant (tenant id, token signing key, TLS CA) with other emulated "
        "vaults started with the same folder; default: the state dir",
    )
    p.add_argument(
        "--principal",
        type=_parse_principal,
        action="append",
        default=[],
        help="NAME=ROLE[,ROLE]: a client id and its roles (e.g. crypto-officer,crypto-user); "
        "its federated subject defaults to NAME",
    )
    p.add_argument(
        "--control-token",
        default=None,
        help=f"bearer token for /_emulator/ (else ${CONTROL_TOKEN_ENV}, else generated into STATE_DIR/control-token)",
    )
    d = Limits()
    p.add_argument("--limit-window", type=float, default=d.window_seconds, help="seconds")
    p.add_argument("--limit-hsm-create", type=int, default=d.hsm_create)
    p.add_argument("--limit-software-create", type=int, default=d.software_create)
    p.add_argument("--limit-sign", type=int, default=d.sign, help="EC and RSA-2048 sign/verify")
    p.add_argument("--limit-sign-rsa3072", type=int, default=d.sign_rsa3072)
    p.add_argument("--limit-sign-rsa4096", type=int, default=d.sign_rsa4096)
    p.add_argument("--limit-other", type=int, default=d.other)
    p.add_argument("--log-level", default="INFO")
    return p


def _control_token(args: argparse.Namespace, state_dir: Path) -> tuple[str, Path | None]:
    token = args.control_token or os.environ.get(CONTROL_TOKEN_ENV)
    if token:
        return token, None
    path = state_dir / "control-token"
    if path.exists():
        return path.read_text().strip(), path
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    state_dir: Path = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    tenant_dir: Path = (args.tenant_dir or state_dir).resolve()
    tenant_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(tenant_dir, 0o700)
    tls = ensure_tls_files(tenant_dir)
    token, token_file = _control_token(args, state_dir)
    limits = Limits(
        window_seconds=args.limit_window,
        hsm_create=args.limit_hsm_create,
        software_create=args.limit_software_create,
        sign=args.limit_sign,
        sign_rsa3072=args.limit_sign_rsa3072,
        sign_rsa4096=args.limit_sign_rsa4096,
        other=args.limit_other,
    )
    app = EmulatorApp(
        EmulatorSettings(
            state_dir=state_dir,
            sku=args.sku,
            control_token=token,
            limits=limits,
            tenant_dir=tenant_dir,
        )
    )
    for name, roles in args.principal:
        try:
            app.principals.upsert(name, roles=roles)
        except ValueError as exc:
            parser.error(f"--principal {name}: {exc}")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    host, port = args.listen
    server = EmulatorHTTPServer((host, port), app, ctx)
    real_port = server.server_address[1]
    base = f"https://{host}:{real_port}/"
    app.base_url = base

    info = {
        "vault_url": base,
        "ca_file": str(tls.ca_file),
        "tenant_id": app.tenant_id,
        "authority_host": base,
        "control_url": f"{base}_emulator/",
        "control_token_file": str(token_file) if token_file else None,
        "state_dir": str(state_dir),
        "sku": app.sku,
        "pid": os.getpid(),
    }

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        # shutdown() waits for serve_forever to return, so it must run on another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(json.dumps(info), flush=True)
    log.info("Key Vault emulator (%s) listening on %s, state in %s", app.sku, base, state_dir)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        app.store.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
