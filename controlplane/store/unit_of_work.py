"""Unit of work: one transaction, its repository, and the change events published after commit."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from controlplane.store.repository import Repository

CHANGE_CHANNEL = "spirl_changes"

ChangeKind = Literal["config", "bundle", "topology"]


@dataclass(frozen=True)
class Change:
    """Something a long-polling server may care about. `revision` orders changes of one key."""

    kind: ChangeKind
    key: str  # config: "<scope>/<scope_id>"; bundle: trust domain id; topology: object id
    revision: int

    def to_payload(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_payload(cls, payload: str) -> Change:
        data = json.loads(payload)
        return cls(kind=data["kind"], key=str(data["key"]), revision=int(data["revision"]))


Publisher = Callable[[list[Change]], None]


def _no_publisher(changes: list[Change]) -> None:
    return None


class UnitOfWork:
    """`with uow:` opens a session; `commit()` commits and then publishes recorded changes.

    On PostgreSQL each change is also sent with pg_notify inside the transaction, so other
    control plane processes hear of it exactly when (and only if) the commit happens.
    """

    repo: Repository

    def __init__(self, session_factory: sessionmaker[Session], publish: Publisher | None = None):
        self._session_factory = session_factory
        self._publish = publish or _no_publisher
        self._changes: list[Change] = []

    def __enter__(self) -> UnitOfWork:
        self.session = self._session_factory()
        self.repo = Repository(self.session)
        self._changes = []
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.rollback()
        self.session.close()

    def record(self, change: Change) -> None:
        self._changes.append(change)

    def commit(self) -> None:
        changes, self._changes = self._changes, []
        if changes and self.session.get_bind().dialect.name == "postgresql":
            for change in changes:
                self.session.execute(select(func.pg_notify(CHANGE_CHANNEL, change.to_payload())))
        self.session.commit()
        if changes:
            self._publish(changes)

    def rollback(self) -> None:
        self._changes = []
        self.session.rollback()


class UnitOfWorkFactory:
    """Makes units of work bound to one engine and one publisher."""

    def __init__(self, engine: Engine, publish: Publisher | None = None) -> None:
        self.engine = engine
        self.session_factory = sessionmaker(engine, expire_on_commit=False)
        self.publish: Publisher = publish or _no_publisher

    def __call__(self) -> UnitOfWork:
        return UnitOfWork(self.session_factory, self._dispatch)

    def _dispatch(self, changes: list[Change]) -> None:
        self.publish(changes)
