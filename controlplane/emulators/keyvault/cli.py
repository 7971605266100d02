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
from .identity import ACCESS_POLICY, PERMISSION_MODELS, RBAC
from .limits import Limits
from .store import SoftDeleteSettings

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
        "--access-policy",
        type=_parse_principal,
        action="append",
        default=[],
        help="NAME=PERMISSION[,PERMISSION]: a client id and its access policy key permissions "
        "(get,list,create,update,delete,sign,...; or all); used when the permission model is "
        f"{ACCESS_POLICY}",
    )
    p.add_argument(
        "--permission-model",
        choices=PERMISSION_MODELS,
        default=RBAC,
        help="authorize data-plane calls with Azure RBAC role assignments (default) or with "
        "the legacy vault access policies",
    )
    p.add_argument("--vault-name", default="emulator", help="the name in error messages")
    p.add_argument(
        "--imds-listen",
        type=_parse_listen,
        default=("127.0.0.1", 0),
        help="HOST:PORT of the plain HTTP Instance Metadata Service token endpoint",
    )
    sd = SoftDeleteSettings()
    p.add_argument("--retention-days", type=int, default=sd.retention_days)
    p.add_argument("--purge-protection", action="store_true")
    p.add_argument(
        "--delete-delay",
        type=float,
        default=0.5,
        help="seconds a delete takes to complete (Key Vault deletes asynchronously)",
    )
    p.add_argument(
        "--recover-delay",
        type=float,
        default=0.5,
        help="seconds a recovery takes to complete",
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
    p.add_argument(
        "--limit-hsm-key",
        type=int,
        default=d.hsm_key,
        help="transactions on EC and RSA-2048 HSM keys (get, sign, update, ...)",
    )
    p.add_argument("--limit-hsm-key-rsa3072", type=int, default=d.hsm_key_rsa3072)
    p.add_argument("--limit-hsm-key-rsa4096", type=int, default=d.hsm_key_rsa4096)
    p.add_argument("--limit-software-key", type=int, default=d.software_key)
    p.add_argument("--limit-software-key-rsa3072", type=int, default=d.software_key_rsa3072)
    p.add_argument("--limit-software-key-rsa4096", type=int, default=d.software_key_rsa4096)
    p.add_argument("--limit-vault", type=int, default=d.vault, help="list keys, list deleted")
    p.add_argument(
        "--no-retry-after",
        action="store_true",
        help="answer 429 without a Retry-After header, as the service often does",
    )
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
    try:
        limits = Limits(
            window_seconds=args.limit_window,
            hsm_create=args.limit_hsm_create,
            software_create=args.limit_software_create,
            hsm_key=args.limit_hsm_key,
            hsm_key_rsa3072=args.limit_hsm_key_rsa3072,
            hsm_key_rsa4096=args.limit_hsm_key_rsa4096,
            software_key=args.limit_software_key,
            software_key_rsa3072=args.limit_software_key_rsa3072,
            software_key_rsa4096=args.limit_software_key_rsa4096,
            vault=args.limit_vault,
            retry_after=not args.no_retry_after,
        )
        soft_delete = SoftDeleteSettings(
            retention_days=args.retention_days,
            purge_protection=args.purge_protection,
            delete_delay=args.delete_delay,
            recover_delay=args.recover_delay,
        )
    except ValueError as exc:
        parser.error(str(exc))
    app = EmulatorApp(
        EmulatorSettings(
            state_dir=state_dir,
            sku=args.sku,
            control_token=token,
            limits=limits,
            tenant_dir=tenant_dir,
            permission_model=args.permission_model,
            soft_delete=soft_delete,
            vault_name=args.vault_name,
        )
    )
    for name, roles in args.principal:
        try:
            app.principals.upsert(name, roles=roles)
        except ValueError as exc:
            parser.error(f"--principal {name}: {exc}")
    for name, permissions in args.access_policy:
        try:
            app.principals.upsert(name, key_permissions=permissions)
        except ValueError as exc:
            parser.error(f"--access-policy {name}: {exc}")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    host, port = args.listen
    server = EmulatorHTTPServer((host, port), app, ctx)
    real_port = server.server_address[1]
    base = f"https://{host}:{real_port}/"
    app.base_url = base
    imds_host, imds_port = args.imds_listen
    imds = EmulatorHTTPServer((imds_host, imds_port), app.serve_imds, None)
    imds_url = f"http://{imds_host}:{imds.server_address[1]}"
    threading.Thread(target=imds.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()

    info = {
        "vault_url": base,
        "ca_file": str(tls.ca_file),
        "tenant_id": app.tenant_id,
        "authority_host": base,
        "imds_url": imds_url,
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
        threading.Thread(target=imds.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(json.dumps(info), flush=True)
    log.info("Key Vault emulator (%s) listening on %s, state in %s", app.sku, base, state_dir)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        imds.server_close()
        app.store.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
