"""HTTP(S) plumbing: a threaded HTTP/1.1 server that does the TLS handshake per connection.

The handshake runs in the connection's own thread (not in accept()), so one slow or
broken client cannot stall the listener. Without a TLS context it serves plain HTTP (the
instance metadata endpoint, which Azure serves over HTTP only). Requests become `Request` objects handed to
an application callable returning a `Response`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["EmulatorHTTPServer", "Request", "Response"]

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20


@dataclass
class Request:
    method: str
    path: str  # decoded path, no query
    raw_path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    client_ip: str

    def param(self, name: str) -> str | None:
        # Query parameter names are case-insensitive in Key Vault.
        for k, v in self.query.items():
            if k.lower() == name.lower() and v:
                return v[0]
        return None

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        value = json.loads(self.body)
        if not isinstance(value, dict):
            raise ValueError("JSON body must be an object")
        return value

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode("utf-8")).items() if v}


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False  # drop the TCP connection with RST instead of answering


App = Callable[[Request], Response]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "spirl-keyvault-emulator"
    sys_version = ""
    # Buffered writer: headers and body leave in one write (handle_one_request flushes after
    # each request). Unbuffered, the body waits behind Nagle for the client's delayed ACK
    # of the headers: ~40 ms per call on Linux.
    wbufsize = -1
    server: EmulatorHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.client_address[0], *args)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.send_error(413)
            return
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=unquote(split.path),
            raw_path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
            client_ip=self.client_address[0],
        )
        try:
            response = self.server.app(request)
        except Exception:  # a bug in the emulator: answer 500 rather than hang the client
            log.exception("emulator error on %s %s", self.command, split.path)
            response = Response(
                500, {"error": {"code": "InternalServerError", "message": "emulator error"}}
            )
        if response.reset:
            self._reset()
            return
        payload = b"" if response.body is None else json.dumps(response.body).encode("utf-8")
        self.send_response(response.status)
        if response.body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    def _reset(self) -> None:
        # SO_LINGER 0 makes close() send RST: the client sees "connection reset by peer".
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    idle_timeout = 120.0

    def __init__(
        self, address: tuple[str, int], app: App, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.app = app
        self.ssl_context = ssl_context
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        sock: socket.socket = request
        sock.settimeout(self.idle_timeout)
        with contextlib.suppress(OSError):
            # TLS records of one response must not wait for the client's delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is None:
            tls: socket.socket = sock
        else:
            try:
                tls = self.ssl_context.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address, exc)
                return
        try:
            _Handler(tls, client_address, self)
        except (OSError, ssl.SSLError):
            pass  # client went away
        finally:
            with contextlib.suppress(OSError):
                tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection error from %s", client_address, exc_info=True)
