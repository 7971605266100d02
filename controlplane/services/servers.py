"""Trust domain servers: status reports, the merged trust bundle, and the servers table."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from controlplane.domain import BadRequest, NotFound, utc_now
from controlplane.services.objects import get_deployment_row, get_trust_domain_row
from controlplane.store.models import BundleKeyRow, ServerRow
from controlplane.store.unit_of_work import Change, UnitOfWork

HEALTH_VALUES = ("HEALTHY", "UNHEALTHY")
KEY_KINDS = {"jwt": "jwt-svid", "x509-ca": "x509-svid"}
MAX_KEYS_PER_REPORT = 64
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
BUNDLE_REFRESH_HINT_SECONDS = 60
# What the control plane keeps of each reported key (the public key goes to the bundle). A server
# before not_before/key_type/provider_ref existed simply leaves them out.
KEY_FIELDS = ("kid", "kind", "key_manager", "state", "not_before", "not_after", "key_type")
MAX_PROVIDER_REF = 1024


def _parse_time(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise BadRequest(f"{where} must be an RFC 3339 time string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(f"{where} is not an RFC 3339 time: {value!r}") from exc
    if parsed.tzinfo is None:
        raise BadRequest(f"{where} must carry a time zone")
    return parsed


def report_status(uow: UnitOfWork, server_id: str, report: object) -> None:
    if not isinstance(report, dict):
        raise BadRequest("status report must be a JSON object")
    server = uow.repo.server(server_id)
    if server is None:
        raise NotFound(f"server {server_id} not found")
    health = report.get("health")
    if health not in HEALTH_VALUES:
        raise BadRequest(f"health must be one of {', '.join(HEALTH_VALUES)}")
    keys = report.get("keys") or []
    if not isinstance(keys, list) or len(keys) > MAX_KEYS_PER_REPORT:
        raise BadRequest(f"keys must be a list of at most {MAX_KEYS_PER_REPORT} keys")
    now = utc_now()
    status = {k: report.get(k) for k in STATUS_FIELDS}
    status["keys"] = [_stored_key(key, f"keys[{i}]") for i, key in enumerate(keys)]
    if report.get("reported_at") is not None:
        reported_at = _parse_time(report["reported_at"], "reported_at")
        status["clock_offset_seconds"] = round((reported_at - now).total_seconds(), 1)
    server.health = health
    server.status_json = json.dumps(status, sort_keys=True, default=str)
    server.last_contact_at = now
    server.last_report_at = now
    tdd = get_deployment_row(uow, server.deployment_id)
    td = get_trust_domain_row(uow, tdd.trust_domain_id)
    if _merge_bundle_keys(uow, td.id, server_id, keys, now):
        td.bundle_version += 1
        uow.record(Change("bundle", td.id, td.bundle_version))
    uow.commit()


def _stored_key(key: object, where: str) -> dict[str, Any]:
    """The inventory entry kept for one reported key; optional fields are checked when present."""
    if not isinstance(key, dict):
        raise BadRequest(f"{where} must be an object")
    if key.get("not_before") is not None:
        _parse_time(key["not_before"], f"{where}.not_before")
    stored = {k: key.get(k) for k in KEY_FIELDS}
    ref = key.get("provider_ref")
    if ref is not None:
        if not isinstance(ref, str) or len(ref) > MAX_PROVIDER_REF:
            raise BadRequest(f"{where}.provider_ref must be a string of at most {MAX_PROVIDER_REF}")
        stored["provider_ref"] = ref
    return stored


def _merge_bundle_keys(
    uow: UnitOfWork, td_id: str, server_id: str, keys: list[Any], now: datetime
) -> bool:
    """Add newly reported public keys and drop expired ones; True when the bundle changed."""
    existing = {row.kid: row for row in uow.repo.bundle_keys(td_id)}
    changed = False
    for index, key in enumerate(keys):
        where = f"keys[{index}]"
        if not isinstance(key, dict):
            raise BadRequest(f"{where} must be an object")
        kid, kind, jwk = key.get("kid"), key.get("kind"), key.get("jwk")
        if not isinstance(kid, str) or not 1 <= len(kid) <= 255:
            raise BadRequest(f"{where}.kid must be a string of 1-255 characters")
        if kind not in KEY_KINDS:
            raise BadRequest(f"{where}.kind must be one of {', '.join(KEY_KINDS)}")
        if not isinstance(jwk, dict) or "kty" not in jwk:
            raise BadRequest(f"{where}.jwk must be a public JWK object")
        if any(private in jwk for private in ("d", "p", "q", "dp", "dq", "qi")):
            raise BadRequest(f"{where}.jwk holds private key material; send only the public key")
        not_after = _parse_time(key.get("not_after"), f"{where}.not_after")
        if not_after <= now or kid in existing:
            continue
        entry = dict(jwk)
        entry["kid"] = kid
        entry["use"] = KEY_KINDS[kind]
        if kind == "x509-ca":
            x5c = key.get("x5c")
            if not isinstance(x5c, list) or not x5c or not all(isinstance(c, str) for c in x5c):
                raise BadRequest(f"{where}.x5c must list the CA certificate (base64 DER)")
            entry["x5c"] = x5c
        row = BundleKeyRow(
            trust_domain_id=td_id,
            kid=kid,
            use=entry["use"],
            jwk_json=json.dumps(entry, sort_keys=True),
            not_after=not_after,
            server_id=server_id,
        )
        uow.repo.add(row)
        existing[kid] = row
        changed = True
    for row in list(existing.values()):
        if row.not_after <= now:
            uow.repo.delete_bundle_key(row)
            changed = True
    return changed


def bundle_keys(uow: UnitOfWork, td_id: str) -> tuple[int, list[tuple[datetime, dict[str, Any]]]]:
    """(bundle version, [(not_after, JWK)]) of a trust domain, straight from the database."""
    td = get_trust_domain_row(uow, td_id)
    return td.bundle_version, [
        (row.not_after, json.loads(row.jwk_json)) for row in uow.repo.bundle_keys(td_id)
    ]


def bundle_document(
    version: int, keys: list[tuple[datetime, dict[str, Any]]], now: datetime
) -> dict[str, Any]:
    """The SPIFFE bundle (JWKS) served to everyone: unexpired keys, one per kid."""
    seen: set[str] = set()
    out = []
    for not_after, jwk in keys:
        if not_after <= now or jwk["kid"] in seen:
            continue
        seen.add(jwk["kid"])
        out.append(jwk)
    return {
        "keys": out,
        "spiffe_sequence": version,
        "spiffe_refresh_hint": BUNDLE_REFRESH_HINT_SECONDS,
    }


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
