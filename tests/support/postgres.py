"""A throwaway PostgreSQL server for the tests: initdb in a temporary folder, a free port, loopback only.

initdb refuses to run as root, so as root we run the server binaries as the `postgres` user.
If PostgreSQL is missing the tests fail loudly: CI must exercise both databases.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

PG_BIN_DIRS = [
    *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True),  # Debian: newest major first
    Path("/usr/local/bin"),
    Path("/usr/bin"),
]


def _pg_bin(name: str) -> str:
    for folder in PG_BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"PostgreSQL server binary {name!r} not found; install postgresql-15")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass
class PostgresServer:
    data_dir: Path
    port: int

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server for good and remove its files."""
        _run(_pg_ctl(self.data_dir, "-m", "immediate", "stop"))
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def halt(self) -> None:
        """An outage: every connection is cut and new ones are refused until `resume()`.

        A fast (not immediate) shutdown: with synchronous_commit off, an immediate one may
        lose the last commits, and the test would see data vanish rather than an outage.
        """
        _run(_pg_ctl(self.data_dir, "-m", "fast", "stop"))

    def resume(self) -> None:
        result = _run(
            _pg_ctl(
                self.data_dir,
                "-o",
                _options(self.data_dir, self.port),
                "-l",
                str(self._log),
                "-w",
                "start",
            )
        )
        if result.returncode != 0:
            log = self._log.read_text(errors="replace") if self._log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stderr or result.stdout}\n{log}")

    @property
    def _log(self) -> Path:
        return self.data_dir.parent / "server.log"


def _pg_ctl(data: Path, *args: str) -> list[str]:
    return [_pg_bin("pg_ctl"), "-D", str(data), *args]


def _options(data: Path, port: int) -> str:
    """Loopback only, sockets beside the data, no durability (a test server)."""
    return (
        f"-p {port} -k {data.parent} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
    )


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_as_postgres(cmd), capture_output=True, text=True, timeout=120)


def start_postgres() -> PostgresServer:
    root = Path(tempfile.mkdtemp(prefix="spirl-pg-"))
    data = root / "data"
    os.chmod(root, 0o755)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    result = _run(
        [
            _pg_bin("initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ]
    )
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed: {result.stderr or result.stdout}")
    server = PostgresServer(data_dir=data, port=free_port())
    server.resume()
    return server
