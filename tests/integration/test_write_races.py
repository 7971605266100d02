"""Writes that read, check, then write, racing another transaction (PostgreSQL, where both can
run at once; SQLite's write transactions are exclusive from BEGIN IMMEDIATE, so they queue).
Each race is made deterministic: the other transaction runs, to its commit, right before the
first write statement of the one under test.

A status report racing the deregistration of its server:
The report reads its server, then writes; a deregistration that commits in between used to
make the write fail with a server error (a stale row, or a bundle key for a server that is
gone). The report must be refused as the server's next call would be (`Deregistered`: 401
`server_deregistered`), store nothing, and leave the bundle as the deregistration left it.

Two registrations with one join token: exactly one server joins, the other is refused
(`Unauthenticated`), as a single-use token promises.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, event

from controlplane.domain import Deregistered, Unauthenticated
from controlplane.services import auth, fleet, objects
from controlplane.services import servers as server_service
from controlplane.store.database import create_db_engine, migrate
from controlplane.store.unit_of_work import UnitOfWorkFactory

from support.api import jwt_key, status_report
from support.postgres import PostgresServer


@pytest.fixture
def pg_engine(postgres_server: PostgresServer) -> Iterator[Engine]:
    engine = create_db_engine(postgres_server.create_database())
    migrate(engine)
    yield engine
    engine.dispose()


def _server(uows: UnitOfWorkFactory) -> tuple[str, str]:
    """(trust domain id, server id) of one registered server."""
    with uows() as uow:
        td = objects.create_trust_domain(uow, "example.org", "test")
    with uows() as uow:
        tdd = objects.create_deployment(uow, "prod", td["id"], "test")
    with uows() as uow:
        cluster = objects.create_cluster(uow, "east", tdd["id"], "test")
    with uows() as uow:
        join = auth.create_join_token(uow, tdd["id"], 600, "test")
    with uows() as uow:
        server = auth.register_server(uow, join["token"], "tds-1", cluster["id"])
    return td["id"], server["server_id"]


def _deregister_before(engine: Engine, uows: UnitOfWorkFactory, server_id: str, marker: str):  # type: ignore[no-untyped-def]
    def deregister() -> None:
        with uows() as uow:
            fleet.deregister_server(uow, server_id, "admin:test")

    return _run_before(engine, marker, deregister)


def _run_before(engine: Engine, marker: str, other: Callable[[], None]):  # type: ignore[no-untyped-def]
    """Run `other` once, in another thread (its own transaction), just before the first
    statement starting with `marker` executes (or, for `FOR UPDATE`, ending with it); returns
    the listener (to remove) and whether it ran."""
    done = threading.Event()

    def before(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        text = " ".join(statement.upper().split())
        if done.is_set() or not (text.startswith(marker) or text.endswith(marker)):
            return

        done.set()
        worker = threading.Thread(target=other)
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "the other transaction waited on the one under test"

    event.listen(engine, "before_cursor_execute", before)
    return before, done


@pytest.mark.parametrize(
    ("what", "marker"),
    [
        # A heartbeat (keys already published) writes only the server row.
        ("heartbeat", "UPDATE SERVERS"),
        # New keys lock the trust domain's bundle first (the only FOR UPDATE of a report).
        ("new keys", "FOR UPDATE"),
    ],
)
def test_a_report_racing_deregistration_is_refused_not_a_server_error(
    pg_engine: Engine, what: str, marker: str
) -> None:
    uows = UnitOfWorkFactory(pg_engine)
    td_id, server_id = _server(uows)
    first = [jwt_key("k-1")]
    with uows() as uow:
        server_service.report_status(uow, server_id, status_report(keys=first))
    keys = first if what == "heartbeat" else [*first, jwt_key("k-2")]
    listener, raced = _deregister_before(pg_engine, uows, server_id, marker)
    try:
        with pytest.raises(Deregistered), uows() as uow:
            server_service.report_status(uow, server_id, status_report(keys=keys))
    finally:
        event.remove(pg_engine, "before_cursor_execute", listener)
    assert raced.is_set(), f"the race was not provoked: no statement began with {marker}"
    with uows() as uow:
        assert uow.repo.server(server_id) is None
        assert [k for k, *_ in uow.repo.bundle_snapshot(td_id)[1]] == []  # type: ignore[index]


def test_one_join_token_registers_one_server_when_two_race(pg_engine: Engine) -> None:
    uows = UnitOfWorkFactory(pg_engine)
    with uows() as uow:
        td = objects.create_trust_domain(uow, "example.org", "test")
    with uows() as uow:
        tdd = objects.create_deployment(uow, "prod", td["id"], "test")
    with uows() as uow:
        token = auth.create_join_token(uow, tdd["id"], 600, "test")["token"]
    joined: list[str] = []

    def other() -> None:
        with uows() as uow:
            joined.append(auth.register_server(uow, token, "tds-other", None)["server_id"])

    listener, raced = _run_before(pg_engine, "UPDATE JOIN_TOKENS", other)
    try:
        with pytest.raises(Unauthenticated), uows() as uow:
            auth.register_server(uow, token, "tds-late", None)
    finally:
        event.remove(pg_engine, "before_cursor_execute", listener)
    assert raced.is_set()
    with uows() as uow:
        assert [s.id for s in uow.repo.servers(tdd["id"])] == joined
