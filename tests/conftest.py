"""Shared fixtures: both databases (SQLite and a throwaway PostgreSQL server) and a live API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from support.live_api import LiveApi, serve_api
from support.postgres import PostgresServer, start_postgres

DATABASES = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'controlplane.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    from controlplane.store.database import create_db_engine, migrate

    eng = create_db_engine(database_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def api_settings():  # type: ignore[no-untyped-def]
    """Settings of the `live_api` app; a test module may override this fixture."""
    from controlplane.api.app import Settings

    return Settings()


@pytest.fixture
def live_api(engine: Engine, api_settings) -> Iterator[LiveApi]:  # type: ignore[no-untyped-def]
    """The real ASGI app served as `serve` does (support.served), in a thread of the test process."""
    with serve_api(engine, api_settings) as api:
        yield api
