"""Config revisions become visible in the order they are numbered (PostgreSQL).

A server's effective version is the largest revision among its layers. If a later-numbered
revision (a cluster's) could commit before an earlier one (its deployment's), the server would
already be at the larger number when the smaller one lands, and the deployment's change would
never be delivered to it. SQLite has one writer at a time; on PostgreSQL the repository holds a
lock from numbering to commit. This test watches a second writer wait for the first.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from controlplane.domain import utc_now
from controlplane.services import config as config_service
from controlplane.services import objects
from controlplane.store.database import migrate
from controlplane.store.repository import Repository
from controlplane.store.unit_of_work import UnitOfWorkFactory

pytestmark = pytest.mark.postgres

LIFECYCLE = "section: KeyLifecycle\nschema: v1\nspec:\n  jwtKeyTTL: 2h\n"


def _insert(session: Session, scope: str, scope_id: str) -> int:
    row = Repository(session).insert_config_version(
        scope=scope,
        scope_id=scope_id,
        version=1,
        expected_head_version=0,
        actor="admin:test",
        action="set",
        at=utc_now(),
        sections=config_service.parse_upload(LIFECYCLE, scope),
    )
    assert row is not None
    return row.revision


def test_a_second_config_writer_waits_for_the_first_to_commit(postgres_server) -> None:
    engine = create_engine(postgres_server.create_database())
    migrate(engine)
    uows = UnitOfWorkFactory(engine)
    with uows() as uow:
        td = objects.create_trust_domain(uow, "example.org", "admin:test")
    with uows() as uow:
        tdd = objects.create_deployment(uow, "prod", td["id"], "admin:test")
    with uows() as uow:
        cluster = objects.create_cluster(uow, "east", tdd["id"], "admin:test")

    first = Session(engine)
    first_revision = _insert(first, "trust-domain-deployment", tdd["id"])  # numbered, not committed

    second_revision: list[int] = []

    def second_writer() -> None:
        with Session(engine) as second:
            second_revision.append(_insert(second, "cluster", cluster["id"]))
            second.commit()

    thread = threading.Thread(target=second_writer)
    thread.start()
    try:
        waiting = False
        deadline = time.monotonic() + 30
        with engine.connect() as watcher:
            while not waiting and time.monotonic() < deadline and thread.is_alive():
                waiting = bool(
                    watcher.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                            " AND datname = current_database()"
                        )
                    ).scalar()
                )
                watcher.rollback()
                time.sleep(0.05)
        assert waiting, "the second config writer did not wait for the first to commit"
        assert not second_revision
    finally:
        first.commit()
        first.close()
        thread.join(30)
    assert second_revision and second_revision[0] > first_revision
    engine.dispose()
