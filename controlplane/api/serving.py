"""How the control plane's ASGI app is served: uvicorn with a connection guard in front.

uvicorn has no request-header or body read timeout and its `limit_concurrency` answers 503 to
every request, `/healthz` included, once connections pile up: 250 half-open sockets took a
`--max-connections 200` server down and 3,000 stayed open for ever. Hypercorn's `read_timeout`
would cut our long-polls and Granian has no body timeout (see DEVELOPERS.md), so we keep uvicorn
(httptools, uvloop: the propagation benchmark's numbers) and add the missing pieces in one
protocol subclass:

- **header timeout**: from accept (TLS handshake included), or from the first byte of a later
  request on a kept-alive connection, to the request's last header;
- **body timeout**: from the last header to the last body byte. A request without a body (every
  long-poll) passes it at once: nothing times out while the app holds a request open;
- **head size**: a request line plus headers over 64 KiB gets 431 (httptools has no limit, and
  it buffers a header until its line ends, so the bytes of an unfinished head are counted too);
- **write timeout**: a connection whose client stops reading is closed once its write buffer
  has stayed full (the transport paused writing) this long. Otherwise a client that pipelines
  requests and never reads would hold a request "in flight" for ever. A waiting long-poll writes
  nothing, so it never pauses writing and is never cut;
- **connection limit**: past `max_connections`, the oldest connection that holds no request
  (half-open, then idle keep-alive) is closed to make room. Requests in flight are never cut;
  when every connection holds one, new requests get 503 with `Retry-After`, except the health
  probes, which are always served.

Cost: one timer armed and cancelled per request (and per write-buffer stall) and two dict
operations per state change; no extra object per waiting long-poll.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import resource
import socket
import ssl
import struct
import time

# The TLS protocol loop.create_server(ssl=...) uses, run by us so that the handshake is inside
# the guard's view (uvloop's own on uvloop: asyncio's preallocates 256 KiB per connection).
from asyncio.sslproto import SSLProtocol
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from controlplane.api import identity

__all__ = [
    "HEALTH_PATHS",
    "MAX_REQUEST_HEAD_BYTES",
    "ConnectionGuard",
    "ConnectionLimits",
    "build_server",
    "event_loop_factory",
    "fit_open_file_limit",
]

log = logging.getLogger("controlplane.serving")

HEALTH_PATHS = frozenset({b"/healthz", b"/readyz"})
MAX_REQUEST_HEAD_BYTES = 64 * 1024
DEFAULT_MAX_CONNECTIONS = 20000
# File descriptors kept free for the database, log files and the listening sockets.
RESERVED_FILES = 256
SUMMARY_INTERVAL_SECONDS = 60.0

NEW, PENDING, BUSY, IDLE, CLOSED = "new", "pending", "busy", "idle", "closed"
# Timer reasons, named after the ConnectionLimits field that sets them.
HEADER_TIMEOUT, BODY_TIMEOUT, IDLE_TIMEOUT = "header_timeout", "body_timeout", "keep_alive_timeout"
WRITE_TIMEOUT = "write_timeout"


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 5.0
    body_timeout: float = 10.0
    write_timeout: float = 30.0
    keep_alive_timeout: int = 75
    max_connections: int = DEFAULT_MAX_CONNECTIONS


class ConnectionGuard:
    """Which connections hold a request and which may be closed to make room; no I/O.

    Connections are in one phase: `pending` (no complete request head yet), `busy` (a request in
    flight), `idle` (kept alive between requests). Pending and idle ones are kept in insertion
    order, so the oldest is the first closed when the limit is reached.
    """

    def __init__(
        self, limits: ConnectionLimits, on_close: Callable[[str], None] | None = None
    ) -> None:
        self.limits = limits
        self.open = 0
        self.busy = 0
        self._pending: dict[Any, None] = {}
        self._idle: dict[Any, None] = {}
        self._on_close = on_close
        self._unreported: collections.Counter[str] = collections.Counter()
        self._last_summary = float("-inf")

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def idle(self) -> int:
        return len(self._idle)

    def opened(self, conn: Any) -> None:
        """A new connection: pending until its first request head is complete."""
        self.open += 1
        conn.guard_phase = PENDING
        self._pending[conn] = None
        if self.open > self.limits.max_connections:
            self._make_room(conn)

    def _make_room(self, newcomer: Any) -> None:
        for pool in (self._pending, self._idle):
            victim = next(iter(pool), None)
            if victim is not None and victim is not newcomer:
                self.drop(victim, "evicted")
                return
        # Every other connection holds a request: the newcomer stays, its request gets a 503
        # unless it is a health probe, and the connection closes after that answer.

    def request_begun(self, conn: Any) -> None:
        """The first byte of a request arrived on a kept-alive connection."""
        if conn.guard_phase == IDLE:
            del self._idle[conn]
            conn.guard_phase = PENDING
            self._pending[conn] = None

    def has_room(self, conn: Any) -> bool:
        """Whether `conn` may start a request: a connection that already holds one (its next
        request was pipelined) keeps its slot."""
        return conn.guard_phase == BUSY or self.busy < self.limits.max_connections

    def request_started(self, conn: Any) -> None:
        """The request head is complete: the connection holds a request until the response ends."""
        phase = conn.guard_phase
        if phase == PENDING:
            del self._pending[conn]
        elif phase == IDLE:
            del self._idle[conn]
        if phase in (PENDING, IDLE):
            self.busy += 1
            conn.guard_phase = BUSY

    def request_finished(self, conn: Any, *, next_begun: bool) -> None:
        """The response ended and no pipelined request follows."""
        if conn.guard_phase != BUSY:
            return
        self.busy -= 1
        conn.guard_phase = PENDING if next_begun else IDLE
        (self._pending if next_begun else self._idle)[conn] = None

    def drop(self, conn: Any, reason: str) -> None:
        """Close `conn` for `reason` (a timeout, eviction, ...) and forget it at once."""
        self.closed(conn)
        conn.guard_close()
        self.note(reason)

    def closed(self, conn: Any) -> None:
        phase = conn.guard_phase
        if phase in (NEW, CLOSED):
            return
        if phase == PENDING:
            del self._pending[conn]
        elif phase == IDLE:
            del self._idle[conn]
        else:
            self.busy -= 1
        self.open -= 1
        conn.guard_phase = CLOSED

    def note(self, reason: str) -> None:
        """Count a connection the guard closed; log a summary at most once a minute."""
        if self._on_close is not None:
            self._on_close(reason)
        self._unreported[reason] += 1
        now = time.monotonic()
        if now - self._last_summary >= SUMMARY_INTERVAL_SECONDS:
            self._last_summary = now
            counts = dict(self._unreported)
            self._unreported.clear()
            log.warning(
                "closed connections to protect the server (slow, idle or over the limit)",
                extra={"closed": counts, "open": self.open, "busy": self.busy},
            )

    def gauges(self) -> Iterable[tuple[str, str, tuple[tuple[str, str], ...], float]]:
        text = "Open HTTP connections by phase (pending: no complete request yet)"
        for phase, value in (
            (PENDING, self.pending),
            (BUSY, self.busy),
            (IDLE, self.idle),
        ):
            yield "spirl_http_connections", text, (("phase", phase),), float(value)


def _is_health_probe(url: bytes) -> bool:
    try:
        return httptools.parse_url(url).path in HEALTH_PATHS
    except httptools.HttpParserInvalidURLError:
        return False


async def _at_capacity(scope: Any, receive: Any, send: Any) -> None:
    body = json.dumps(
        {
            "error": "unavailable",
            "message": "the control plane is at its connection limit; retry shortly",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
                identity.RAW_HEADER,  # answered here, outside the app's middleware
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\nconnection: close\r\n"
    + b"%s: %s\r\n" % identity.RAW_HEADER
    + b"content-length: %d\r\n\r\n%s"
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read timeouts, a head size limit and the guard.

    Subclassed per server by `protocol_class()`, which sets `guard`.
    """

    guard: ClassVar[ConnectionGuard]
    # Slots, not instance-dict entries: uvicorn's protocol sets 27 attributes, and past 30 an
    # instance dict stops sharing its keys with the class (+1.3 KiB per connection).
    __slots__ = (
        "guard_phase",
        "_read_timer",
        "_timer_reason",
        "_write_timer",
        "_running",
        "_head_bytes",
        "_head_open",
        "_head_received",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard_phase = NEW
        self._read_timer: asyncio.TimerHandle | None = None
        self._timer_reason = ""
        self._write_timer: asyncio.TimerHandle | None = None
        # The cycle whose app task runs: with pipelining, uvicorn's `cycle` is the last one read.
        self._running: RequestResponseCycle | None = None
        # Bytes of the request line and headers: `_head_bytes` of the complete ones (parser
        # callbacks), `_head_received` of all received while the head is open (`_head_open`),
        # which bounds what httptools buffers for a line that has not ended.
        self._head_bytes = 0
        self._head_open = True
        self._head_received = 0

    # -- timers -------------------------------------------------------------------------------

    def _arm(self, reason: str) -> None:
        delay = getattr(self.guard.limits, reason)
        self._disarm()
        self._read_timer = self.loop.call_later(delay, self._timed_out, reason)
        self._timer_reason = reason

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
            self._timer_reason = ""

    def _timed_out(self, reason: str) -> None:
        self._read_timer = None
        self._timer_reason = ""
        self.guard.drop(self, reason)

    def _disarm_write(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_timed_out(self) -> None:
        self._write_timer = None
        # Reset, not FIN: the kernel would otherwise keep the unread replies (megabytes) queued
        # for a client that does not read.
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.guard.drop(self, WRITE_TIMEOUT)

    def pause_writing(self) -> None:
        """The write buffer is full: the client has this long to read before it is closed."""
        super().pause_writing()
        if self._write_timer is None:
            delay = self.guard.limits.write_timeout
            self._write_timer = self.loop.call_later(delay, self._write_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._disarm_write()

    def guard_close(self) -> None:
        self._disarm()
        self._disarm_write()
        if self.transport is not None and not self.transport.is_closing():
            # abort(), not close(): nothing is owed to this client, and a TLS close would wait
            # for the client's close_notify while the slot is already given away.
            self.transport.abort()

    # -- connection -----------------------------------------------------------------------------

    def accepted(self, transport: asyncio.BaseTransport) -> None:
        """The TCP connection is open (before any TLS handshake): the header clock starts."""
        self.guard.opened(self)
        self._arm(HEADER_TIMEOUT)
        # Until a TLS handshake ends this is the raw connection, which the guard may close.
        self.transport = transport  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        if self.guard_phase == NEW:  # plain HTTP; with TLS, accepted() ran before the handshake
            self.accepted(transport)
        elif self.guard_phase == CLOSED:  # closed by the guard while the handshake ended
            transport.abort()  # type: ignore[attr-defined]
            return
        super().connection_made(transport)  # type: ignore[arg-type]

    def forget(self) -> None:
        self._disarm()
        self._disarm_write()
        self.guard.closed(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.forget()
        running = self._running
        if running is not None and not running.response_complete:
            # uvicorn marks only the last cycle read; a pipelined request's app waiting to
            # write would otherwise write to the closed transport and log an error.
            running.disconnected = True
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    def data_received(self, data: bytes) -> None:
        # Bytes on a connection between requests start the header clock, even ones that begin
        # no request (stray CRLFs): uvicorn stops its keep-alive timer on any byte.
        if self.guard_phase != BUSY and self._timer_reason not in (HEADER_TIMEOUT, BODY_TIMEOUT):
            self._arm(HEADER_TIMEOUT)
        # While a head is open, feed the parser no more than the head limit allows: httptools
        # keeps an unfinished header line in memory, however long. Past the limit, 431.
        while data and self._head_open:
            room = MAX_REQUEST_HEAD_BYTES - self._head_received
            if room <= 0:
                self._head_too_large()
                return
            part, data = data[:room], data[room:]
            self._head_received += len(part)
            super().data_received(part)
            if self.transport.is_closing():
                return
        if data:
            super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        if self._head_bytes <= MAX_REQUEST_HEAD_BYTES:
            super().send_400_response(msg)
            return
        self._head_too_large()

    def _head_too_large(self) -> None:
        body = json.dumps(
            {
                "error": "input_rejected",
                "message": f"request line and headers are over {MAX_REQUEST_HEAD_BYTES} bytes",
            }
        ).encode()
        self.transport.write(_HEAD_TOO_LARGE % (len(body), body))
        self.transport.close()
        self.guard.note("head_too_large")

    # -- parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self.guard.request_begun(self)
        if self._timer_reason != HEADER_TIMEOUT:
            self._arm(HEADER_TIMEOUT)

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
            # Raised inside a parser callback: uvicorn turns it into send_400_response.
            raise ValueError("request head too large")

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        refuse = not self.guard.has_room(self) and not _is_health_probe(self.url)
        self.guard.request_started(self)
        if refuse:
            self.guard.note("at_capacity")
            app, self.app = self.app, _at_capacity
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()
        self._arm(BODY_TIMEOUT)

    def on_message_complete(self) -> None:
        self._disarm()
        self._head_open = True  # bytes from here on belong to the next request's head
        self._head_received = 0
        super().on_message_complete()
        if self.guard_phase != BUSY and self.timeout_keep_alive_task is None:
            # The response went out before the body was read (e.g. a 401): uvicorn's keep-alive
            # timer was stopped by the late body bytes, so keep the connection on our clock.
            self._arm(IDLE_TIMEOUT)

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self.guard.request_finished(self, next_begun=self._timer_reason == HEADER_TIMEOUT)


def _ssl_protocol_class(loop: asyncio.AbstractEventLoop) -> Any:
    """uvloop's TLS protocol on uvloop (what its create_server(ssl=...) uses), else asyncio's."""
    try:
        import uvloop
        import uvloop.loop
    except ImportError:
        return SSLProtocol
    return uvloop.loop.SSLProtocol if isinstance(loop, uvloop.Loop) else SSLProtocol  # type: ignore[attr-defined]


class TlsConnection(asyncio.BufferedProtocol):
    """A TLS connection: the event loop's TLS protocol in front of the HTTP protocol, both made at
    accept, so the handshake runs inside the header timeout and the guard sees (and may close)
    a connection that never completes it. uvicorn's own TLS starts the HTTP protocol only after
    the handshake, with a fixed 60-second handshake timeout.

    Subclassed per server by `protocol_class()`, which sets `http_class` and `tls`.
    """

    http_class: ClassVar[type[GuardedHttpToolsProtocol]]
    tls: ClassVar[ssl.SSLContext]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.http = self.http_class(*args, **kwargs)
        seconds = self.http.guard.limits.header_timeout
        self._tls = _ssl_protocol_class(self.http.loop)(
            self.http.loop,
            self.http,
            self.tls,
            None,  # type: ignore[arg-type]  # no one awaits the handshake: the guard times it
            server_side=True,
            ssl_handshake_timeout=seconds,  # type: ignore[arg-type]
            ssl_shutdown_timeout=seconds,
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.http.accepted(transport)
        self._tls.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._tls.connection_lost(exc)
        self.http.forget()  # before a handshake ends, the TLS layer does not tell the HTTP one

    def get_buffer(self, sizehint: int) -> Any:
        return self._tls.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._tls.buffer_updated(nbytes)

    def eof_received(self) -> bool | None:
        return self._tls.eof_received()  # type: ignore[func-returns-value]

    def pause_writing(self) -> None:
        self._tls.pause_writing()

    def resume_writing(self) -> None:
        self._tls.resume_writing()


def protocol_class(
    guard: ConnectionGuard, tls: ssl.SSLContext | None
) -> type[asyncio.BaseProtocol]:
    """The protocol class uvicorn makes per connection, bound to one server's guard and TLS."""
    http = type("ServedHttpProtocol", (GuardedHttpToolsProtocol,), {"guard": guard})
    if tls is None:
        return http
    return type("ServedTlsConnection", (TlsConnection,), {"http_class": http, "tls": tls})


def listen_address(listen: str) -> tuple[str, int]:
    """(host, port) of a `--listen HOST:PORT` flag (an IPv6 host in brackets); SystemExit
    naming the flag otherwise."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise SystemExit(f"--listen must be HOST:PORT, not {listen!r}")
    return host, int(port)


def listen_on(listen: str) -> socket.socket:
    """The listening socket for a `--listen HOST:PORT` flag; SystemExit with the reason when it
    cannot be opened (both command lines that serve HTTP say it the same way)."""
    host, port = listen_address(listen)
    try:
        return listen_socket(host, port)
    except OSError as exc:
        raise SystemExit(f"cannot listen on {listen}: {exc.strerror}") from None


def listen_socket(host: str, port: int) -> socket.socket:
    """The listening socket the app is served on (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only turns Nagle off (TCP_NODELAY) on sockets whose proto
    # says TCP; without it every small response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def build_server(
    app: Any,
    limits: ConnectionLimits,
    *,
    tls: ssl.SSLContext | None = None,
    on_close: Callable[[str], None] | None = None,
    lifespan: str = "auto",
) -> tuple[uvicorn.Server, ConnectionGuard]:
    """The one way the control plane serves HTTP (the CLI and the tests' in-process server)."""
    guard = ConnectionGuard(limits, on_close)
    config = uvicorn.Config(
        app,
        http=cast(Any, protocol_class(guard, tls)),
        ws="none",
        lifespan=lifespan,  # type: ignore[arg-type]
        log_config=None,
        timeout_graceful_shutdown=2,
        limit_concurrency=None,  # the guard limits connections, keeping room for health probes
        backlog=2048,
        timeout_keep_alive=limits.keep_alive_timeout,
        # No Server/Date headers: nothing needs them, and a fan-out writes thousands of replies.
        server_header=False,
        date_header=False,
    )
    return uvicorn.Server(config), guard


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (it comes with uvicorn[standard]): cheaper wake-ups and writes."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def fit_open_file_limit(max_connections: int | None) -> int:
    """The connection limit for this process: `max_connections`, or by default as many as the
    open-file limit allows up to DEFAULT_MAX_CONNECTIONS. Raises the soft open-file limit when
    the hard one allows; past it accept() fails and no connection could be evicted for room."""
    wanted = max_connections or DEFAULT_MAX_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    fitted = max(1, soft - RESERVED_FILES)
    if max_connections is not None:
        log.warning(
            "--max-connections lowered to fit the open-file limit",
            extra={"requested": max_connections, "max_connections": fitted, "open_files": soft},
        )
    return fitted
