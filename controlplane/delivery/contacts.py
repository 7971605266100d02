"""When each trust domain server was last heard from, kept in memory and written in batches.

Every long-poll is a contact, but writing one row per poll would make an idle poll cost a
database write. Instead a poll costs one dictionary store here, and `take_unwritten()` hands
the contacts seen since the last call to a periodic writer (one batched UPDATE for all of them,
however many polls there were). Until then this process merges its own contacts in when it
computes a server's state; other replicas see them after the next write.
"""

from __future__ import annotations

from datetime import datetime


class ContactLog:
    def __init__(self) -> None:
        self._seen: dict[str, datetime] = {}
        self._unwritten: set[str] = set()

    def seen(self, server_id: str, at: datetime) -> None:
        self._seen[server_id] = at
        self._unwritten.add(server_id)

    def snapshot(self) -> dict[str, datetime]:
        """A copy, safe to hand to a worker thread."""
        return dict(self._seen)

    def take_unwritten(self) -> list[tuple[str, datetime]]:
        """Contacts not yet written, oldest first; the caller writes them."""
        ids, self._unwritten = self._unwritten, set()
        return sorted(
            ((i, self._seen[i]) for i in ids if i in self._seen), key=lambda item: item[1]
        )

    def forget(self, server_id: str) -> None:
        self._seen.pop(server_id, None)
        self._unwritten.discard(server_id)
