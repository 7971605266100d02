"""Engine creation and schema migrations (Alembic is the only thing that changes the schema)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from controlplane.files import ensure_private_dir

log = logging.getLogger(__name__)

# controlplane/migrations: a symlink to the top-level migrations/ in a checkout, a real folder in
# the wheel (see pyproject.toml), so one path works installed or not.
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
DATABASE_URL_ENV = "SPIRL_DATABASE_URL"
DEFAULT_DATA_DIR = Path("data")


class SchemaOutdated(RuntimeError):
    """The database schema is behind the code; `spirl-controlplane migrate` fixes it."""


def resolve_database_url(database_url: str | None, data_dir: Path | None) -> str:
    """Explicit URL, else $SPIRL_DATABASE_URL, else SQLite in the data folder."""
    url = database_url or os.environ.get(DATABASE_URL_ENV)
    if url:
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            # psycopg 3 is the driver we ship; plain postgresql:// would ask for psycopg2.
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return url
    folder = (data_dir or DEFAULT_DATA_DIR).resolve()
    ensure_private_dir(folder)
    return f"sqlite:///{folder / 'controlplane.db'}"


def _private_sqlite_files(database: str | None) -> None:
    """Create the database file 0600 before SQLite does (it would use 0644); its WAL and
    shared-memory files take the database file's mode. Existing looser files are tightened."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.is_dir():
        return  # SQLite reports the missing folder itself
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm", f"{path.name}-journal"):
        file = path.with_name(name)
        try:
            mode = file.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(file, 0o600)
            log.info("tightened permissions of %s from %o to 600", file, mode)


def create_db_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _private_sqlite_files(parsed.database)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # Let SQLAlchemy control transactions; WAL lets readers run beside the one writer.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            # BEGIN IMMEDIATE takes the write lock up front, so concurrent writers queue
            # instead of failing with "database is locked" on upgrade from a read lock.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision."""
    from alembic import command

    cfg = _alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def schema_status(engine: Engine) -> tuple[str | None, str]:
    """(current revision in the database, newest revision in migrations/)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(str(engine.url)))
    head = script.get_current_head()
    assert head is not None
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head


def ensure_schema_current(engine: Engine, *, auto_migrate: bool) -> None:
    current, head = schema_status(engine)
    if current == head:
        return
    if auto_migrate:
        log.info("migrating database schema", extra={"from_revision": current, "to": head})
        migrate(engine)
        return
    raise SchemaOutdated(
        f"database schema is at revision {current or 'none'} but this version needs {head}; "
        "run `spirl-controlplane migrate` (or start with `serve --migrate`)"
    )
