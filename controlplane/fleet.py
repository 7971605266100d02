"""Fleet rules, pure: what state a trust domain server is in, and how far a config rollout got.

No I/O: the services read rows and the clock, these functions decide.

Server states. A server reports its health (HEALTHY or UNHEALTHY) in status reports, and every
long-poll or report is a contact. The report is believed only while it is recent:

- ``UNREACHABLE``: nothing heard from the server for longer than the staleness window;
- ``UNKNOWN``: the server is in contact but has sent no report within the window (or none yet);
- ``HEALTHY`` / ``UNHEALTHY``: what a report within the window said.

The default window follows from how often a live server makes contact: it starts a long-poll at
least every ``LONG_POLL_MAX_WAIT`` seconds and reports at least every ``STATUS_INTERVAL`` seconds;
contacts seen by one replica reach the database (and so every other replica) within
``CONTACT_FLUSH_INTERVAL``. The window lets one whole interval be missed before a server is called
unreachable.

Rollouts. A rollout is one stored version of one scope (scope, id, version; its global
``revision``). It targets every server whose effective config includes that scope. A server has
applied it once its applied effective version reaches the revision (effective versions are the
largest revision of their layers, so a later version of any layer includes it); it refused it
when its last refused effective version reaches the revision and it has not applied it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

HEALTHY = "HEALTHY"
UNHEALTHY = "UNHEALTHY"
UNKNOWN = "UNKNOWN"
UNREACHABLE = "UNREACHABLE"
SERVER_STATES = (HEALTHY, UNHEALTHY, UNKNOWN, UNREACHABLE)

LONG_POLL_MAX_WAIT = 60.0  # seconds a long-poll may be held (the `wait` cap)
STATUS_INTERVAL = 60.0  # seconds between a trust domain server's heartbeat reports
CONTACT_FLUSH_INTERVAL = 15.0  # seconds between writes of long-poll contact times
DEFAULT_STALE_AFTER = timedelta(
    seconds=2 * max(LONG_POLL_MAX_WAIT, STATUS_INTERVAL) + CONTACT_FLUSH_INTERVAL
)
DEFAULT_RETENTION = timedelta(days=3)

# Rollout progress of one server, and of the whole rollout.
APPLIED = "applied"
REFUSED = "refused"
PENDING = "pending"
SERVER_PROGRESS = (APPLIED, REFUSED, PENDING, UNREACHABLE.lower())
PHASE_IN_PROGRESS = "in_progress"
PHASE_DONE = "done"
PHASE_REFUSED = "refused"


@dataclass(frozen=True)
class FleetPolicy:
    """How long silence is tolerated. `retention` None: servers are never removed automatically."""

    stale_after: timedelta = DEFAULT_STALE_AFTER
    retention: timedelta | None = DEFAULT_RETENTION

    def __post_init__(self) -> None:
        if self.stale_after <= timedelta(0):
            raise ValueError("the staleness window must be longer than zero")
        if self.retention is not None and self.retention < self.stale_after:
            raise ValueError(
                "the retention period must be at least the staleness window "
                f"({self.stale_after.total_seconds():g}s)"
            )

    @property
    def contact_flush_interval(self) -> float:
        """Seconds between writes of long-poll contacts: well inside the window."""
        return min(CONTACT_FLUSH_INTERVAL, self.stale_after.total_seconds() / 4)

    @property
    def sweep_interval(self) -> float:
        """Seconds between looks for servers past the retention period."""
        if self.retention is None:
            return 0.0
        return max(0.2, min(60.0, self.retention.total_seconds() / 10))


@dataclass(frozen=True)
class Contact:
    """What is known of one server's contacts (all times timezone-aware UTC)."""

    registered_at: datetime
    last_contact_at: datetime | None
    last_report_at: datetime | None
    health: str

    def last_seen(self, seen_here: datetime | None = None) -> datetime:
        """The latest contact, counting one this process saw but has not written yet."""
        return max(t for t in (self.registered_at, self.last_contact_at, seen_here) if t)


def server_state(
    contact: Contact, now: datetime, stale_after: timedelta, seen_here: datetime | None = None
) -> str:
    if now - contact.last_seen(seen_here) > stale_after:
        return UNREACHABLE
    if contact.last_report_at is None or now - contact.last_report_at > stale_after:
        return UNKNOWN
    return contact.health if contact.health in (HEALTHY, UNHEALTHY) else UNKNOWN


def is_past_retention(
    contact: Contact, now: datetime, retention: timedelta | None, seen_here: datetime | None = None
) -> bool:
    return retention is not None and now - contact.last_seen(seen_here) > retention


@dataclass(frozen=True)
class ServerRollout:
    """One targeted server as a rollout sees it."""

    server_id: str
    name: str
    cluster_id: str | None
    state: str  # a SERVER_STATES value
    last_contact_at: datetime
    desired_version: int | None
    applied_version: int | None
    refused_version: int | None
    error: str | None


def server_progress(server: ServerRollout, revision: int) -> str:
    """applied, refused, unreachable or pending. A refusal counts even from a silent server:
    it is the last thing that server said about this change."""
    if server.applied_version is not None and server.applied_version >= revision:
        return APPLIED
    if server.refused_version is not None and server.refused_version >= revision:
        return REFUSED
    if server.state == UNREACHABLE:
        return UNREACHABLE.lower()
    return PENDING


@dataclass(frozen=True)
class RolloutProgress:
    counts: dict[str, int]
    servers: list[tuple[ServerRollout, str]] = field(default_factory=list)  # not yet applied

    @property
    def targeted(self) -> int:
        return sum(self.counts.values())

    @property
    def phase(self) -> str:
        if self.counts[REFUSED]:
            return PHASE_REFUSED
        if self.counts[PENDING]:
            return PHASE_IN_PROGRESS
        return PHASE_DONE


def rollout_progress(revision: int, servers: Iterable[ServerRollout]) -> RolloutProgress:
    """Done when every reachable targeted server applied the revision; refused as soon as one
    refused it (waiting longer cannot help: that server keeps its previous config)."""
    counts = dict.fromkeys(SERVER_PROGRESS, 0)
    outstanding = []
    for server in servers:
        progress = server_progress(server, revision)
        counts[progress] += 1
        if progress != APPLIED:
            outstanding.append((server, progress))
    outstanding.sort(key=lambda item: (SERVER_PROGRESS.index(item[1]), item[0].name))
    return RolloutProgress(counts, outstanding)


def key_manager_type(value: object) -> str | None:
    """The type of a key manager as servers report it: `{"type": ..., "digest": ...}`, or (from
    older servers) the type alone."""
    if isinstance(value, dict):
        found = value.get("type")
        return found if isinstance(found, str) else None
    return value if isinstance(value, str) else None


def printable(text: str, limit: int | None = None) -> str:
    """What a server reported, safe to show: what is not printable (control, format and line
    characters: terminal escape sequences, bidirectional overrides) as spaces, and with a
    `limit`, cut to that many characters with a mark."""
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else " " for ch in text)
