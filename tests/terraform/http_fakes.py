"""HTTP servers on 127.0.0.1 that stand where the control plane should be: what a wrong endpoint
looks like (another service's JSON 404, a proxy's HTML page), and a proxy in front of the real
control plane that can answer 503/429 or hang. Threads of the test process, stopped by `close()`.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

HTML_404 = b"<html><head><title>404 Not Found</title></head><body>nginx</body></html>"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeServer  # type: ignore[assignment]

    def _answer(self) -> None:
        self.server.requests += 1
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.answer(self, body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class FakeServer(http.server.ThreadingHTTPServer):
    """Answers every request by `mode`:

    - `json404`: another JSON service: 404 `{"error": "not_found"}` (no identity header);
    - `html404`: a proxy's HTML error page;
    - `no_route`: a control plane without the route asked for (an older version): Starlette's
      plain-text 404, with the identity header;
    - `forward`: passes requests to `upstream` (the control plane) and its answers back, with
      the headers named in `keep_headers`;
    - `unavailable`: the next `failures` requests get `status` (503 or 429, `Retry-After: 0`),
      then it forwards;
    - `hang`: never answers (until closed).
    """

    daemon_threads = True

    def __init__(self, mode: str, upstream: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = mode
        self.upstream = upstream
        self.failures = 0
        self.status = 503
        self.requests = 0
        self.failed = 0
        self.keep_headers = {"content-type", "spirl-api-version", "retry-after"}
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, request: _Handler, body: bytes) -> None:
        if self.mode == "json404":
            payload = json.dumps({"error": "not_found", "message": "no such thing"}).encode()
            request.send(404, payload, {"Content-Type": "application/json"})
        elif self.mode == "html404":
            request.send(404, HTML_404, {"Content-Type": "text/html"})
        elif self.mode == "no_route":
            headers = {"Content-Type": "text/plain; charset=utf-8", "Spirl-Api-Version": "1"}
            request.send(404, b"Not Found", headers)
        elif self.mode == "hang":
            self._closed.wait(60)
        elif self.mode == "unavailable" and self.failed < self.failures:
            self.failed += 1
            request.send(self.status, b"busy", {"Retry-After": "0", "Content-Type": "text/plain"})
        else:
            self._forward(request, body)

    def _forward(self, request: _Handler, body: bytes) -> None:
        assert self.upstream is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        answer = httpx.request(
            request.command, self.upstream + request.path, headers=headers, content=body
        )
        request.send(
            answer.status_code,
            answer.content,
            {k: v for k, v in answer.headers.items() if k.lower() in self.keep_headers},
        )

    def close(self) -> None:
        self._closed.set()
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=10)


@contextmanager
def fake_server(mode: str, upstream: str | None = None) -> Iterator[FakeServer]:
    server = FakeServer(mode, upstream)
    try:
        yield server
    finally:
        server.close()
