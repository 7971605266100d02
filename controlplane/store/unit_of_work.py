"""Unit of work: one transaction, its repository, and the change events published after commit."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

from sqlalchemy import Engine, exc, func, select
from sqlalchemy.orm import Session, sessionmaker

from controlplane.domain import Unavailable
from controlplane.store.repository import Repository

log = logging.getLogger(__name__)

CHANGE_CHANNEL = "spirl_changes"
# What a database that cannot be reached raises: refused or lost connections (PostgreSQL
# down or restarting), an exhausted pool, SQLite that cannot open or lock its file.
UNREACHABLE = (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError, exc.TimeoutError)

ChangeKind = Literal["config", "bundle", "topology", "server", "rollout"]


@dataclass(frozen=True)
class Change:
    """Something a long-polling server may care about. `revision` orders changes of one key."""

    kind: ChangeKind
    # config: "<scope>/<scope_id>"; bundle: trust domain id; topology: object id;
    # server: id of a deregistered server; rollout: deployment id (revision: the row's generation)
    key: str
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


class OutageLog:
    """Logs a database outage once when it starts and once when it ends, not once per request.

    Every unit of work reports how it ended; only the first failure and the first success
    after it write a line, so a minute of outage under load is two log lines, not thousands.
    """

    def __init__(self) -> None:
        self._since: float | None = None
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, error: BaseException) -> None:
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()
        log.error(
            "database unavailable: answering 503 until it is back",
            extra={"reason": reason[0][:300] if reason else type(error).__name__},
        )

    def recovered(self) -> None:
        if self._since is None:  # the common case: no lock on the hot path
            return
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            log.warning(
                "database available again",
                extra={"outage_seconds": round(time.monotonic() - since, 1)},
            )


class UnitOfWork:
    """`with uow:` opens a session; `commit()` commits and then publishes recorded changes.

    On PostgreSQL each change is also sent with pg_notify inside the transaction, so other
    control plane processes hear of it exactly when (and only if) the commit happens. A
    database that cannot be reached surfaces as `Unavailable` (HTTP 503 with Retry-After).
    """

    repo: Repository

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        publish: Publisher | None = None,
        outage: OutageLog | None = None,
    ):
        self._session_factory = session_factory
        self._publish = publish or _no_publisher
        self._outage = outage or OutageLog()
        self._changes: list[Change] = []

    def __enter__(self) -> UnitOfWork:
        self.session = self._session_factory()
        self.repo = Repository(self.session)
        self._changes = []
        return self

    def __exit__(self, exc_type: object, error: BaseException | None, tb: object) -> None:
        try:
            self.session.rollback()
            self.session.close()
        except UNREACHABLE as cleanup_error:
            error = error or cleanup_error
        if isinstance(error, UNREACHABLE):
            self._outage.failed(error)
            raise Unavailable(
                "the database is unavailable; nothing was changed, retry later"
            ) from error
        if error is None:
            self._outage.recovered()

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
        self.outage = OutageLog()

    def __call__(self) -> UnitOfWork:
        return UnitOfWork(self.session_factory, self._dispatch, self.outage)

    def _dispatch(self, changes: list[Change]) -> None:
        self.publish(changes)
