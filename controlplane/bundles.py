"""SPIFFE bundles as the specs define them, for every source that serves one (the control plane's
bundle endpoint and long-poll, each trust domain server's `/v1/bundle`). Pure: no I/O.

- Entries (X509-SVID §6.1, JWT-SVID §6.1): an `x509-svid` entry has no `kid` and exactly one
  CA certificate in `x5c`; a `jwt-svid` entry has a `kid` and no `x5c`.
- The document (Trust Domain and Bundle §4.1): `keys`, `spiffe_sequence`, `spiffe_refresh_hint`,
  keys in a stable order so equal content is equal JSON.
- `spiffe_sequence` "MUST be changed whenever the contents of the bundle are updated" and only
  grows: each source keeps a persisted counter and bumps it when `content_digest` changes.
- `spiffe_refresh_hint`: see :func:`refresh_hint`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "BundleKey",
    "DEFAULT_REFRESH_HINT",
    "JWT_SVID",
    "X509_SVID",
    "bundle_document",
    "content_digest",
    "entry_identity",
    "jwt_entry",
    "refresh_hint",
    "unique_entries",
    "x509_entry",
]


@dataclass(frozen=True)
class BundleKey:
    """One key of a trust domain's bundle: as a server reported it, or as stored."""

    kid: str  # the server's id for the key (JWT header kid; Key Vault key id); unique per trust domain
    entry: dict[str, Any]  # the bundle entry, as served
    not_before: datetime | None
    not_after: datetime

    @property
    def use(self) -> str:
        return str(self.entry["use"])


X509_SVID = "x509-svid"
JWT_SVID = "jwt-svid"
# The spec's suggested default poll interval (§6.2); also the most we ever advertise.
DEFAULT_REFRESH_HINT = timedelta(minutes=5)
MIN_REFRESH_HINT = timedelta(seconds=1)


def x509_entry(jwk: Mapping[str, Any], ca_cert_der: bytes) -> dict[str, Any]:
    """An `x509-svid` entry: the CA's public JWK, its one certificate in `x5c`, no `kid`."""
    entry = {k: v for k, v in jwk.items() if k not in ("kid", "use", "x5c")}
    entry["use"] = X509_SVID
    entry["x5c"] = [base64.b64encode(ca_cert_der).decode("ascii")]
    return entry


def jwt_entry(jwk: Mapping[str, Any], kid: str) -> dict[str, Any]:
    """A `jwt-svid` entry: the signer's public JWK with its `kid`, no `x5c`."""
    entry = {k: v for k, v in jwk.items() if k not in ("kid", "use", "x5c")}
    entry["use"] = JWT_SVID
    entry["kid"] = kid
    return entry


def entry_identity(entry: Mapping[str, Any]) -> tuple[str, str]:
    """What makes two entries the same key: the kid of a JWT key, the certificate of a CA."""
    if entry.get("use") == X509_SVID:
        return X509_SVID, str((entry.get("x5c") or [""])[0])
    return str(entry.get("use")), str(entry.get("kid"))


def unique_entries(entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per identity (the first wins), sorted by identity."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        seen.setdefault(entry_identity(entry), dict(entry))
    return [seen[identity] for identity in sorted(seen)]


def bundle_document(
    entries: Iterable[Mapping[str, Any]], sequence: int, hint_seconds: int
) -> dict[str, Any]:
    return {
        "keys": unique_entries(entries),
        "spiffe_sequence": sequence,
        "spiffe_refresh_hint": hint_seconds,
    }


def content_digest(entries: Iterable[Mapping[str, Any]], hint_seconds: int) -> str:
    """SHA-256 of everything a bundle says except its sequence number."""
    canonical = json.dumps(
        {"keys": unique_entries(entries), "spiffe_refresh_hint": hint_seconds},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def refresh_hint(lifetimes: Iterable[timedelta]) -> int:
    """Seconds a consumer should wait between fetches, from the shortest key lifetime L.

    A key is published when it is prepared (at half its lifetime) and signs from 5/6 of it:
    consumers have L/3 to learn it. Polling every L/6 leaves them half of that window.
    Never more than the spec's suggested 5 minutes, never less than a second.
    """
    shortest = min(lifetimes, default=None)
    if shortest is None:
        return int(DEFAULT_REFRESH_HINT.total_seconds())
    hint = min(max(shortest / 6, MIN_REFRESH_HINT), DEFAULT_REFRESH_HINT)
    return int(hint.total_seconds())
