"""The control plane's files are private: the data folder 0700, the SQLite database and its
WAL and shared-memory files 0600, whatever the umask; looser existing ones are tightened."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from controlplane.store.database import create_db_engine, migrate, resolve_database_url


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_data_dir_and_database_are_private(tmp_path: Path, loose_umask: None) -> None:
    data = tmp_path / "data"
    engine = create_db_engine(resolve_database_url(None, data))
    try:
        migrate(engine)
        with engine.connect() as conn:  # an open connection keeps the WAL and SHM files
            conn.execute(text("SELECT count(*) FROM alembic_version"))
            files = sorted(p.name for p in data.iterdir())
            assert files == ["controlplane.db", "controlplane.db-shm", "controlplane.db-wal"]
            assert {name: mode(data / name) for name in files} == {name: 0o600 for name in files}
        assert mode(data) == 0o700
    finally:
        engine.dispose()


def test_looser_existing_files_are_tightened(tmp_path: Path, loose_umask: None) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    db = data / "controlplane.db"
    with sqlite3.connect(db) as conn:  # made by hand, as an older version did: 0644
        conn.execute("CREATE TABLE t (x)")
    assert mode(db) == 0o644
    engine = create_db_engine(resolve_database_url(None, data))
    engine.dispose()
    assert (mode(data), mode(db)) == (0o700, 0o600)
