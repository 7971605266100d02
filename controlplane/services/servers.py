"""Trust domain servers: status reports and the servers table (their keys: services/bundles.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from controlplane.domain import MAX_VERSION, BadRequest, Deregistered, NotFound, utc_now
from controlplane.fleet import printable
from controlplane.reported_keys import (
    DEFAULT_MAX_KEY_LIFETIME,
    InvalidReport,
    check_reported_keys,
    report_time,
)
from controlplane.services import bundles as bundle_service
from controlplane.services.objects import get_deployment_row, get_trust_domain_row
from controlplane.store.models import ServerRow
from controlplane.store.unit_of_work import UnitOfWork

HEALTH_VALUES = ("HEALTHY", "UNHEALTHY")
STATUS_FIELDS = (
    "desired_version",
    "attempted_version",
    "attempted_at",
    "applied_version",
    "applied_at",
    "health",
    "error",
    "key_manager",
    "refused_version",
)
# What the control plane keeps of each reported key (the public key goes to the bundle). A server
# before not_before/key_type/provider_ref existed simply leaves them out.
KEY_FIELDS = ("kid", "kind", "key_manager", "state", "not_before", "not_after", "key_type")
MAX_PROVIDER_REF = 1024
VERSION_FIELDS = ("desired_version", "attempted_version", "applied_version", "refused_version")
TIME_FIELDS = ("attempted_at", "applied_at")
# A server's error line is shown in tables, the console and --wait messages: kept to a size a
# reader can take in (a key manager's error with a whole HTTP body is cut, never refused: the
# report is also the server's heartbeat).
MAX_ERROR_CHARS = 2000
MAX_KEY_MANAGER_FIELD = 128
LABEL_KEY_FIELDS = ("state", "key_type")  # per key, shown as they are


def report_status(
    uow: UnitOfWork,
    server_id: str,
    report: object,
    *,
    now: datetime | None = None,
    max_key_lifetime: timedelta = DEFAULT_MAX_KEY_LIFETIME,
) -> None:
    """Store a server's status and merge its public keys into the trust bundle (keys expire by
    `now`). Any bad value refuses the whole report (InvalidReport names it by JSON Pointer) and
    stores nothing."""
    if not isinstance(report, dict):
        raise BadRequest("status report must be a JSON object")
    server = uow.repo.server(server_id)
    if server is None:
        raise NotFound(f"server {server_id} not found")
    health = report.get("health")
    if health not in HEALTH_VALUES:
        raise BadRequest(f"health must be one of {', '.join(HEALTH_VALUES)}")
    now = now or utc_now()
    tdd = get_deployment_row(uow, server.deployment_id)
    td = get_trust_domain_row(uow, tdd.trust_domain_id)
    keys = check_reported_keys(report.get("keys"), td.name, now, max_key_lifetime)
    status = _checked_status(report)
    # Every check before any write: a bad inventory field refuses the report before the
    # bundle lock is taken.
    status["keys"] = [
        _stored_key(key, f"/keys/{i}") for i, key in enumerate(report.get("keys") or [])
    ]
    contact = utc_now()  # the real time, also where `now` is a test's simulated one
    if report.get("reported_at") is not None:
        reported_at = report_time(report["reported_at"], "/reported_at")
        status["clock_offset_seconds"] = round((reported_at - contact).total_seconds(), 1)
    # Before the server row: a change locks the trust domain row first.
    bundle_service.merge_reported_keys(uow, td.id, server_id, keys, now)
    # A deregistration may commit between the read above and here (PostgreSQL): the report of
    # a server that is gone is refused as its next call would be, never a server error.
    status_json = json.dumps(status, sort_keys=True, default=str)
    if not uow.repo.store_server_report(server_id, health, status_json, contact):
        raise Deregistered()
    uow.commit()


def _checked_status(report: dict[str, Any]) -> dict[str, Any]:
    """The STATUS_FIELDS of a report, each of its type (InvalidReport names the first that is
    not); free text is cut to its bound and made printable, as it reaches terminals."""
    status: dict[str, Any] = {"health": report["health"]}
    for name in VERSION_FIELDS:
        value = report.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_VERSION
        ):
            raise InvalidReport(f"/{name}", f"must be a version from 0 to {MAX_VERSION}, or null")
        status[name] = value
    for name in TIME_FIELDS:
        value = report.get(name)
        if value is not None:
            report_time(value, f"/{name}")
        status[name] = value
    error = report.get("error")
    if error is not None and not isinstance(error, str):
        raise InvalidReport("/error", "must be a string or null")
    status["error"] = printable(error, MAX_ERROR_CHARS) if error else error
    status["key_manager"] = _checked_key_manager(report.get("key_manager"), "/key_manager")
    return status


def _checked_key_manager(value: object, where: str) -> dict[str, str] | str | None:
    """A key manager as a server names it: {type, digest}, its type alone (older servers), or
    null."""
    if value is None or isinstance(value, str):
        _check_text(value, where, MAX_KEY_MANAGER_FIELD)
        return value
    if not isinstance(value, dict):
        raise InvalidReport(where, "must be an object with type and digest, a type, or null")
    if value.get("type") is None:
        raise InvalidReport(f"{where}/type", "is required")
    checked = {}
    for name in ("type", "digest"):
        field = value.get(name)
        _check_text(field, f"{where}/{name}", MAX_KEY_MANAGER_FIELD)
        if field is not None:
            checked[name] = field
    return checked


def _stored_key(key: dict[str, Any], where: str) -> dict[str, Any]:
    """The inventory entry kept for one reported key (already checked by check_reported_keys)."""
    stored = {k: key.get(k) for k in KEY_FIELDS}
    for name in LABEL_KEY_FIELDS:
        _check_text(stored[name], f"{where}/{name}", MAX_KEY_MANAGER_FIELD)
    stored["key_manager"] = _checked_key_manager(stored["key_manager"], f"{where}/key_manager")
    ref = key.get("provider_ref")
    if ref is not None:
        if not isinstance(ref, str) or len(ref) > MAX_PROVIDER_REF:
            raise InvalidReport(
                f"{where}/provider_ref", f"must be a string of at most {MAX_PROVIDER_REF}"
            )
        # A key file's path may hold any character: shown safely, never a refused heartbeat.
        stored["provider_ref"] = printable(ref, MAX_PROVIDER_REF)
    return stored


def _check_text(value: object, where: str, limit: int) -> None:
    """A short label a server reports: null or a printable string of at most `limit`."""
    if value is None:
        return
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidReport(where, f"must be a string of at most {limit}, or null")
    if not value.isprintable():
        raise InvalidReport(where, "must not hold control characters")


def server_dict(row: ServerRow, seen_at: datetime | None = None) -> dict[str, Any]:
    """A server as its last status report described it. `seen_at`: a contact this process saw
    in a long-poll that may not be written yet."""
    status = json.loads(row.status_json or "{}")
    contact = max((t for t in (row.last_contact_at, seen_at) if t is not None), default=None)
    return {
        "id": row.id,
        "name": row.name,
        "trust_domain_deployment_id": row.deployment_id,
        "cluster_id": row.cluster_id,
        "registered_at": row.registered_at.isoformat(),
        "last_contact_at": contact.isoformat() if contact else None,
        "last_report_at": row.last_report_at.isoformat() if row.last_report_at else None,
        "health": row.health,
        **{k: status.get(k) for k in STATUS_FIELDS if k != "health"},
        # the server's clock minus the control plane's when it last reported (None: not reported)
        "clock_offset_seconds": status.get("clock_offset_seconds"),
        "keys": status.get("keys", []),
    }
