"""PostgreSQL LISTEN/NOTIFY: one listener connection per control plane process.

Writes on any replica send `pg_notify` in their transaction; this thread hears them and hands
them to the delivery cache on the event loop. Notifications sent while the connection is down
are lost, so after every (re)connect the cache re-reads everything it holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from controlplane.store.unit_of_work import CHANGE_CHANNEL, Change

log = logging.getLogger(__name__)


class PostgresListener:
    def __init__(
        self,
        conninfo: str,
        on_changes: Callable[[list[Change]], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        self._conninfo = conninfo
        self._on_changes = on_changes
        self._on_reconnect = on_reconnect
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listener", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        backoff = 0.2
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANGE_CHANNEL}")
                    self.connected.set()
                    if not first:
                        log.warning("notification listener reconnected; re-reading cached config")
                        self._on_reconnect()
                    first = False
                    backoff = 0.2
                    while not self._stop.is_set():
                        # The generator ends after 0.5 s of silence so `stop` is noticed.
                        for note in conn.notifies(timeout=0.5):
                            self._on_changes([Change.from_payload(note.payload)])
            except Exception as exc:  # the database restarted, the network blinked, ...
                self.connected.clear()
                if self._stop.is_set():
                    return
                # Once per outage: the retries that follow while it lasts are debug lines.
                level = logging.WARNING if backoff == 0.2 else logging.DEBUG
                log.log(level, "notification listener lost its connection: %s; retrying", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                first = False
