"""A small, real external key service speaking the webhook key manager protocol.

It is what `WebhookKeyManager` talks to in tests and the demo; the protocol is in
docs/webhook-key-service.md. Run it::

    spirl-keyservice --listen 127.0.0.1:0 --state-dir DIR [--tls]

It prints one JSON line ``{"url": ..., "pid": ..., "ca_file": ...}`` (``ca_file`` only
with ``--tls``) and serves until SIGTERM or SIGINT. Keys live in memory and in
``DIR/keys.json`` (0600, rewritten atomically) so a restart keeps them.

Everything before ``/keys`` in a request path is a namespace: ``http://h/a/keys`` and
``http://h/b/keys`` are separate key sets, so one process can serve several servers
(or several tests) without them seeing each other's keys.

Test hooks under ``/_control/`` (not part of the protocol):

- ``POST /_control/faults`` ``{"status": 503, "count": 2, "delay_seconds": 0.0}``: the next
  `count` protocol requests wait `delay_seconds`, then answer `status` (when given).
- ``DELETE /_control/faults``: clear. ``GET /_control/stats``: request counts per operation.

``start_keyservice(tmp_dir)`` starts the process for tests and returns a
:class:`KeyServiceProcess` (context manager) with ``.url``, ``.pid``, ``.stop()``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import json
import logging
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import astuple, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils

from controlplane.emulators.tls import ensure_tls_files
from controlplane.keymanagers.base import HashAlgorithm, KeyType, SigningAlgorithm
from controlplane.keymanagers.signatures import check_digest_length, cryptography_hash, rsa_padding
from controlplane.processes import start_announced, stop_process

__all__ = ["KeyServiceProcess", "KeyServiceState", "main", "start_keyservice"]

log = logging.getLogger(__name__)

_MAX_BODY = 64 * 1024
_PATH = re.compile(r"^(?P<ns>(?:/[^/]+)*?)/keys(?:/(?P<id>[^/]+)(?P<sign>/sign)?)?/?$")
_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class _Key:
    key_type: KeyType
    private_key: _PrivateKey
    public_der: bytes
    created_at: str

    def describe(self, key_id: str) -> dict[str, str]:
        return {
            "key_id": key_id,
            "key_type": self.key_type.value,
            "public_key": base64.b64encode(self.public_der).decode("ascii"),
            "created_at": self.created_at,
        }


def _new_key(key_type: KeyType) -> _PrivateKey:
    if key_type is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(65537, 2048 if key_type is KeyType.RSA_2048 else 4096)


def _public_der(key: _PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass
class _Faults:
    status: int | None = None
    count: int = 0
    delay_seconds: float = 0.0


class KeyServiceState:
    """Keys per namespace, persisted to one JSON file. Thread-safe."""

    def __init__(self, state_file: Path) -> None:
        self._file = state_file
        self._lock = threading.Lock()
        self._keys: dict[str, dict[str, _Key]] = {}
        self._faults = _Faults()
        self.stats: Counter[str] = Counter()
        self._load()

    # -- persistence -------------------------------------------------------------------------

    def _load(self) -> None:
        if not self._file.exists():
            return
        data = json.loads(self._file.read_text())
        for namespace, keys in data.get("namespaces", {}).items():
            for key_id, record in keys.items():
                private_key = serialization.load_der_private_key(
                    base64.b64decode(record["private_key"]), password=None
                )
                assert isinstance(private_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
                self._keys.setdefault(namespace, {})[key_id] = _Key(
                    KeyType(record["key_type"]),
                    private_key,
                    _public_der(private_key),
                    record.get("created_at", ""),
                )

    def _save_locked(self) -> None:
        data = {
            "namespaces": {
                namespace: {
                    key_id: {
                        "key_type": key.key_type.value,
                        "created_at": key.created_at,
                        # An emulator: keys are stored plain, in a 0600 file.
                        "private_key": base64.b64encode(
                            key.private_key.private_bytes(
                                serialization.Encoding.DER,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption(),
                            )
                        ).decode("ascii"),
                    }
                    for key_id, key in keys.items()
                }
                for namespace, keys in self._keys.items()
            }
        }
        tmp = self._file.with_name(f".{self._file.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, self._file)

    # -- faults ------------------------------------------------------------------------------

    def set_faults(self, status: int | None, count: int, delay_seconds: float) -> None:
        with self._lock:
            self._faults = _Faults(status, count, delay_seconds)

    def take_fault(self) -> _Faults | None:
        with self._lock:
            if self._faults.count <= 0:
                return None
            self._faults.count -= 1
            return _Faults(self._faults.status, 1, self._faults.delay_seconds)

    # -- protocol operations -------------------------------------------------------------------

    def create(self, namespace: str, body: Mapping[str, Any]) -> dict[str, str]:
        key_id = body.get("key_id")
        if not isinstance(key_id, str) or not key_id:
            raise ServiceError(400, "bad_request", "key_id must be a non-empty string")
        try:
            key_type = KeyType(body.get("key_type"))
        except ValueError:
            allowed = ", ".join(t.value for t in KeyType)
            raise ServiceError(
                400, "bad_request", f"key_type {body.get('key_type')!r} is not one of {allowed}"
            ) from None
        private_key = _new_key(key_type)  # outside the lock: RSA-4096 is slow
        key = _Key(
            key_type,
            private_key,
            _public_der(private_key),
            datetime.datetime.now(datetime.UTC).isoformat(),
        )
        with self._lock:
            self.stats["create"] += 1
            # Replacing the entry drops the old private key: the old key is unusable at once.
            self._keys.setdefault(namespace, {})[key_id] = key
            self._save_locked()
        return key.describe(key_id)

    def list(self, namespace: str) -> dict[str, list[dict[str, str]]]:
        with self._lock:
            self.stats["list"] += 1
            keys = sorted(self._keys.get(namespace, {}).items())
        return {"keys": [key.describe(key_id) for key_id, key in keys]}

    def sign(self, namespace: str, key_id: str, body: Mapping[str, Any]) -> dict[str, str]:
        with self._lock:
            self.stats["sign"] += 1
            key = self._keys.get(namespace, {}).get(key_id)
        if key is None:
            raise ServiceError(404, "not_found", f"no key {key_id!r}")
        try:
            digest = base64.b64decode(body.get("digest", ""), validate=True)
            algorithm = SigningAlgorithm(
                HashAlgorithm(body.get("hash")), rsa_pss=bool(body.get("rsa_pss", False))
            )
            check_digest_length(digest, algorithm.hash)
        except (ValueError, TypeError, binascii.Error) as exc:
            raise ServiceError(400, "bad_request", f"bad sign request: {exc}") from None
        prehashed = utils.Prehashed(cryptography_hash(algorithm.hash))
        if isinstance(key.private_key, ec.EllipticCurvePrivateKey):
            if algorithm.rsa_pss:
                raise ServiceError(400, "bad_request", "rsa_pss does not apply to an EC key")
            signature = key.private_key.sign(digest, ec.ECDSA(prehashed))
        else:
            signature = key.private_key.sign(digest, rsa_padding(algorithm), prehashed)
        return {"signature": base64.b64encode(signature).decode("ascii")}

    def delete(self, namespace: str, key_id: str) -> None:
        with self._lock:
            self.stats["delete"] += 1
            if self._keys.get(namespace, {}).pop(key_id, None) is None:
                raise ServiceError(404, "not_found", f"no key {key_id!r}")
            self._save_locked()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    # Buffered writer: headers and body leave in one write (handle_one_request flushes after
    # each request). Unbuffered, the body waits behind Nagle for the client's delayed ACK
    # of the headers: ~40 ms per call on Linux.
    wbufsize = -1
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Belt and braces with the buffered writer: nothing we send should wait for an ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _send(self, status: int, body: Mapping[str, Any] | None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise ServiceError(413, "too_large", f"request body over {_MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise ServiceError(400, "bad_request", "body is not JSON") from None
        if not isinstance(body, dict):
            raise ServiceError(400, "bad_request", "body must be a JSON object")
        return body

    def _dispatch(self, method: str) -> None:
        state = self.server.state
        path = self.path.split("?", 1)[0]
        try:
            if path.startswith("/_control/"):
                self._control(method, path)
                return
            match = _PATH.match(path)
            if match is None:
                raise ServiceError(404, "not_found", f"no route {method} {path}")
            # Read the body first, even for an injected fault: leftover bytes would be
            # parsed as the next request on this keep-alive connection.
            body = self._body()
            fault = state.take_fault()
            if fault is not None:
                if fault.delay_seconds:
                    time.sleep(fault.delay_seconds)
                if fault.status is not None:
                    self._send(fault.status, {"error": "injected", "message": "injected fault"})
                    return
            namespace = match["ns"] or "/"
            key_id = unquote(match["id"]) if match["id"] else None
            if key_id is None and method == "POST":
                self._send(201, state.create(namespace, body))
            elif key_id is None and method == "GET":
                self._send(200, state.list(namespace))
            elif key_id is not None and match["sign"] and method == "POST":
                self._send(200, state.sign(namespace, key_id, body))
            elif key_id is not None and not match["sign"] and method == "DELETE":
                state.delete(namespace, key_id)
                self._send(204, None)
            else:
                raise ServiceError(405, "method_not_allowed", f"{method} not allowed on {path}")
        except ServiceError as exc:
            self._send(exc.status, {"error": exc.code, "message": exc.message})
        except Exception:
            log.exception("request %s %s failed", method, path)
            self._send(500, {"error": "internal", "message": "internal error"})

    def _control(self, method: str, path: str) -> None:
        state = self.server.state
        if path == "/_control/faults" and method == "POST":
            body = self._body()
            state.set_faults(
                body.get("status"), int(body.get("count", 1)), float(body.get("delay_seconds", 0))
            )
            self._send(200, {"ok": True})
        elif path == "/_control/faults" and method == "DELETE":
            state.set_faults(None, 0, 0.0)
            self._send(200, {"ok": True})
        elif path == "/_control/stats" and method == "GET":
            self._send(200, dict(state.stats))
        else:
            raise ServiceError(404, "not_found", f"no route {method} {path}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: KeyServiceState) -> None:
        super().__init__(address, _Handler)
        self.state = state


# -- TLS -----------------------------------------------------------------------------------------


# -- command line --------------------------------------------------------------------------------


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="spirl-keyservice", description="A small external key service (webhook protocol)."
    )
    parser.add_argument("--listen", type=_parse_listen, default=("127.0.0.1", 0))
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a generated CA")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
    )

    state_dir: Path = args.state_dir
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    state = KeyServiceState(state_dir / "keys.json")
    server = _Server(args.listen, state)
    scheme = "http"
    announce: dict[str, Any] = {}
    if args.tls:
        ca_file, cert_file, key_file = astuple(ensure_tls_files(state_dir))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
        announce["ca_file"] = str(ca_file)
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else str(host)
    host_text = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{host_text}:{port}"

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        # shutdown() waits for serve_forever to return, so it must run in another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(json.dumps({"url": url, "pid": os.getpid(), **announce}), flush=True)
    log.info("key service on %s, state in %s", url, state_dir)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


# -- test helper ---------------------------------------------------------------------------------


@dataclass
class KeyServiceProcess:
    """A running `spirl-keyservice` child process; stop it by pid with :meth:`stop`."""

    url: str
    pid: int
    state_dir: Path
    ca_file: Path | None
    _process: subprocess.Popen[bytes] = field(repr=False)

    def namespace_url(self, name: str) -> str:
        """URL of a separate key set on the same process (for isolated managers)."""
        return f"{self.url}/{name}"

    def control(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        import httpx

        verify: Any = str(self.ca_file) if self.ca_file else True
        response = httpx.request(method, f"{self.url}/_control/{path}", json=body, verify=verify)
        response.raise_for_status()
        return response.json()

    def inject_faults(
        self, status: int | None = 503, count: int = 1, delay_seconds: float = 0.0
    ) -> None:
        self.control(
            "POST", "faults", {"status": status, "count": count, "delay_seconds": delay_seconds}
        )

    def clear_faults(self) -> None:
        self.control("DELETE", "faults")

    def stats(self) -> dict[str, int]:
        result: dict[str, int] = self.control("GET", "stats")
        return result

    def stop(self, timeout: float = 5.0) -> None:
        stop_process(self._process, timeout)

    def __enter__(self) -> KeyServiceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_keyservice(
    tmp_dir: Path, *, tls: bool = False, listen: str = "127.0.0.1:0", timeout: float = 15.0
) -> KeyServiceProcess:
    """Start the key service as a child process and wait for its JSON line."""
    state_dir = Path(tmp_dir) / "keyservice-state"
    state_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "controlplane.emulators.keyservice"]
    command += ["--listen", listen, "--state-dir", str(state_dir)]
    if tls:
        command.append("--tls")
    process, info = start_announced(
        command, log_path=Path(tmp_dir) / "keyservice.log", timeout=timeout
    )
    return KeyServiceProcess(
        url=info["url"],
        pid=info["pid"],
        state_dir=state_dir,
        ca_file=Path(info["ca_file"]) if "ca_file" in info else None,
        _process=process,
    )


if __name__ == "__main__":
    sys.exit(main())
