"""Raw client sockets for connection tests: half-open connections and hand-written requests."""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import time
from collections.abc import Iterable


def raw(port: int, payload: bytes = b"") -> socket.socket:
    """A blocking connection to 127.0.0.1:`port` that has sent `payload` (maybe nothing)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if payload:
        sock.sendall(payload)
    return sock


def not_reading(port: int, payload: bytes, tls: ssl.SSLContext | None = None) -> socket.socket:
    """A connection that sends `payload` (e.g. pipelined requests) and reads nothing: its receive
    buffer is kept small, so the server's replies soon fill the server's write buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
    sock.sendall(payload)
    return sock


def many_raw(port: int, payloads: list[bytes]) -> list[socket.socket]:
    """One non-blocking connection per payload, each sending its (partial) request."""
    socks = []
    for _ in payloads:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # connecting
            sock.connect(("127.0.0.1", port))
        socks.append(sock)
    selector = selectors.DefaultSelector()
    for sock, payload in zip(socks, payloads, strict=True):
        selector.register(sock, selectors.EVENT_WRITE, payload)
    pending = len(socks)
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        for key, _ in selector.select(0.5):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            selector.unregister(sock)
            pending -= 1
            if key.data:
                # OSError: already closed by the server, which is what the tests look at.
                with contextlib.suppress(OSError):
                    sock.send(key.data)
    selector.close()
    return socks


def still_open(socks: Iterable[socket.socket], within: float = 30.0) -> list[socket.socket]:
    """The sockets the server has not closed after `within` seconds (reads and drops replies)."""
    selector = selectors.DefaultSelector()
    remaining = set()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        remaining.add(sock)
    deadline = time.monotonic() + within
    while remaining and time.monotonic() < deadline:
        for key, _ in selector.select(0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                remaining.discard(sock)
    selector.close()
    return list(remaining)


def response_of(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (with Content-Length) from a blocking socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of a body"
        body += chunk
    return int(lines[0].split()[1]), headers, body
