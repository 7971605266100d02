"""The control plane's ASGI app served in a thread of the test process, the way `serve` does it.

Same server, same connection guard and TLS as `spirl-controlplane serve`
(`controlplane.api.serving.build_server`), so tests can count SQL statements, read the delivery
cache and look at the guard while talking HTTP to a real socket.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from controlplane.api.serving import (
    ConnectionGuard,
    ConnectionLimits,
    build_server,
    event_loop_factory,
    listen_socket,
)


@dataclass
class Served:
    url: str
    port: int
    guard: ConnectionGuard
    loop: asyncio.AbstractEventLoop

    def on_loop(self, fn: Any) -> Any:
        """Run `fn()` on the server's event loop (the guard lives there) and return its result."""
        result: list[Any] = []
        done = threading.Event()

        def call() -> None:
            result.append(fn())
            done.set()

        self.loop.call_soon_threadsafe(call)
        if not done.wait(10):
            raise RuntimeError("the server's event loop did not answer")
        return result[0]


@contextmanager
def serve_in_thread(
    app: Any, limits: ConnectionLimits | None = None, *, tls: ssl.SSLContext | None = None
) -> Iterator[Served]:
    sock = listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server, guard = build_server(app, limits or ConnectionLimits(), tls=tls)
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        await server.serve(sockets=[sock])

    def run() -> None:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("in-process API did not start")
        time.sleep(0.01)
    scheme = "https" if tls is not None else "http"
    try:
        yield Served(url=f"{scheme}://127.0.0.1:{port}", port=port, guard=guard, loop=loops[0])
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
