"""The real ASGI app on a loopback port, in a thread of the test process (see support.served)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import Engine, event

from support.served import serve_in_thread


class QueryCounter:
    """Counts SQL statements an engine executes (to prove what costs database reads)."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        self.statements: list[str] = []
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            self.count += 1
            self.statements.append(statement)

    def reset(self) -> None:
        with self._lock:
            self.count = 0
            self.statements = []


@dataclass
class LiveApi:
    url: str
    engine: Engine
    admin_token: str
    viewer_token: str
    app: object
    queries: QueryCounter

    def client(self, token: str | None = "admin") -> httpx.Client:
        headers = {}
        if token == "admin":
            headers["Authorization"] = f"Bearer {self.admin_token}"
        elif token == "viewer":
            headers["Authorization"] = f"Bearer {self.viewer_token}"
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    @property
    def state(self):  # type: ignore[no-untyped-def]
        return self.app.state.spirl  # type: ignore[attr-defined]


@contextlib.contextmanager
def serve_app(
    engine: Engine, settings: Any = None, tls: Any = None, **app_options: Any
) -> Iterator[tuple[str, Any]]:
    """The app (`create_app(engine, settings, **app_options)`) on a free loopback port, served as
    `serve` does (support.served), stopped on exit; yields (url, app). `tls`: a TlsFiles
    (controlplane.emulators.tls) to serve HTTPS."""
    from controlplane.api.app import create_app
    from controlplane.tls import server_context

    app = create_app(engine, settings, **app_options)
    context = server_context(tls.cert_file, tls.key_file) if tls is not None else None
    with serve_in_thread(app, tls=context) as served:
        yield served.url, app


def user_token(engine: Engine, role: str = "admin") -> str:
    """A new bearer token of `role` (admin or viewer), stored in the database behind `engine`."""
    from controlplane.services.auth import create_token
    from controlplane.store.unit_of_work import UnitOfWorkFactory

    with UnitOfWorkFactory(engine)() as uow:
        token, _ = create_token(uow, role, f"test-{role}")
    return token


@contextlib.contextmanager
def serve_api(engine: Engine, settings: Any = None) -> Iterator[LiveApi]:
    """Tokens (admin, viewer) and the app on a free loopback port, stopped on exit. Serving a
    second app on the same PostgreSQL database makes a second replica."""
    admin, viewer = user_token(engine), user_token(engine, "viewer")
    with serve_app(engine, settings) as (url, app):
        yield LiveApi(
            url=url,
            engine=engine,
            admin_token=admin,
            viewer_token=viewer,
            app=app,
            queries=QueryCounter(engine),
        )
