"""Baseline for the propagation benchmark: the least a long-poll fan-out can do.

A bare asyncio HTTP/1.1 server on uvloop (as the control plane), no framework, no database, no validation, no auth:
`GET /sync?...` waits for the next write; `POST /write` bumps the version and answers every
waiter. Prints one JSON line {"url", "pid"} when listening.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys

state = {"version": 1}
waiters: list[asyncio.Future[None]] = []


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode()
            method, target, _ = line.split(" ", 2)
            length = 0
            for header in head.split(b"\r\n")[1:]:
                if header.lower().startswith(b"content-length:"):
                    length = int(header.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            if method == "POST":
                state["version"] += 1
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(None)
                waiters.clear()
            else:
                have = (
                    int(target.split("config_version=", 1)[1].split("&", 1)[0])
                    if "config_version=" in target
                    else -1
                )
                if have == state["version"]:
                    fut = asyncio.get_running_loop().create_future()
                    waiters.append(fut)
                    await asyncio.wait({fut}, timeout=60)
            body = json.dumps({"changed": True, "config": {"version": state["version"]}}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    # Optional TLS (benchmarks/propagation.py --tls): argv = [--tls-cert PEM --tls-key PEM].
    tls = None
    if len(sys.argv) == 5 and sys.argv[1] == "--tls-cert" and sys.argv[3] == "--tls-key":
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(sys.argv[2], sys.argv[4])
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if tls else "http"
    print(json.dumps({"url": f"{scheme}://127.0.0.1:{port}", "pid": os.getpid()}), flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    import uvloop  # the same event loop the control plane runs on

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
