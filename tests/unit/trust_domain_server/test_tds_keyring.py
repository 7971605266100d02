"""Keyring: thresholds, rotation, swap without key creation, drain and close."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from unit.trust_domain_server.tds_fakes import FakeKeyManager, handle_for

from controlplane.keymanagers.base import KeyType
from controlplane.trust_domain_server.keyring import (
    KeyKind,
    Keyring,
    KeyState,
    Lifetimes,
    NoActiveKeyError,
    activation_threshold,
    preparation_threshold,
    svid_ttl_cap,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def make_ring(km: FakeKeyManager | None = None, **kw) -> tuple[Keyring, FakeKeyManager]:
    km = km or FakeKeyManager("default")
    ring = Keyring("example.org", **kw)
    ring.install_manager(handle_for(km))
    return ring, km


def test_thresholds_follow_spire_formulas() -> None:
    nb, na = T0, T0 + 24 * H
    assert preparation_threshold(nb, na) == T0 + 12 * H
    assert activation_threshold(nb, na) == T0 + 20 * H
    assert svid_ttl_cap(24 * H) == 4 * H
    # Long lifetimes hit the 30d / 7d caps.
    long_na = T0 + timedelta(days=365)
    assert preparation_threshold(nb, long_na) == long_na - timedelta(days=30)
    assert activation_threshold(nb, long_na) == long_na - timedelta(days=7)
    assert svid_ttl_cap(timedelta(days=365)) == timedelta(days=7)


def test_first_rotate_activates_both_kinds_with_lifetimes() -> None:
    ring, km = make_ring(lifetimes=Lifetimes(x509_ca=48 * H, jwt=6 * H))
    assert ring.rotate(T0)
    ca, jwt = ring.current(KeyKind.X509_CA), ring.current(KeyKind.JWT)
    assert ca is not None and jwt is not None
    assert ca.state is KeyState.ACTIVE and jwt.state is KeyState.ACTIVE
    assert ca.not_after == T0 + 48 * H and jwt.not_after == T0 + 6 * H
    assert ca.kid.startswith("x509-ca-") and jwt.kid.startswith("jwt-")
    assert sorted(km.generated) == sorted([ca.kid, jwt.kid])
    # The CA certificate is self-signed by the key manager's key: verify independently.
    assert ca.ca_cert_der is not None
    cert = x509.load_der_x509_certificate(ca.ca_cert_der)
    cert.verify_directly_issued_by(cert)
    assert (
        cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == ca.public_key_der
    )
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org"]
    # Nothing more happens before the preparation threshold.
    assert not ring.rotate(T0 + 2 * H)
    assert len(km.generated) == 2


def test_prepare_then_activate_then_expire() -> None:
    ring, km = make_ring()
    ring.rotate(T0)
    first = ring.current(KeyKind.JWT)
    assert first is not None
    ring.rotate(T0 + 12 * H - timedelta(seconds=1))
    assert {r.state for r in ring.records() if r.kind is KeyKind.JWT} == {KeyState.ACTIVE}

    ring.rotate(T0 + 12 * H)  # preparation threshold
    states = {r.kid: r.state for r in ring.records() if r.kind is KeyKind.JWT}
    assert states[first.kid] is KeyState.ACTIVE
    prepared = [k for k, s in states.items() if s is KeyState.PREPARED]
    assert len(prepared) == 1
    # Prepared keys are already published so verifiers learn them before use.
    assert prepared[0] in {r.kid for r in ring.published(T0 + 12 * H)}

    ring.rotate(T0 + 20 * H)  # activation threshold
    cur = ring.current(KeyKind.JWT)
    assert cur is not None and cur.kid == prepared[0]
    old = next(r for r in ring.records() if r.kid == first.kid)
    assert old.state is KeyState.RETIRED
    assert first.kid in {r.kid for r in ring.published(T0 + 23 * H)}

    ring.rotate(T0 + 24 * H)  # first key's not-after: leaves the bundle
    assert first.kid not in {r.kid for r in ring.records()}


def test_kids_never_repeat() -> None:
    ring, km = make_ring(lifetimes=Lifetimes(x509_ca=H, jwt=H))
    now = T0
    for _ in range(200):
        ring.rotate(now)
        now += timedelta(minutes=5)
    assert len(km.generated) == len(set(km.generated)) > 40


def test_swap_creates_no_key_and_next_generation_uses_new_manager() -> None:
    ring, old = make_ring()
    ring.rotate(T0)
    before = list(old.generated)
    new = FakeKeyManager("webhook")
    dropped = ring.install_manager(handle_for(new))
    assert dropped == []  # the old manager still holds current keys
    assert new.generated == [] and old.generated == before
    # Old keys keep signing until rotation.
    rec, handle = ring.signer_for(KeyKind.JWT, T0 + H)
    assert handle.instance is old and rec.kid in before
    ring.rotate(T0 + 12 * H)
    assert len(new.generated) == 2 and old.generated == before
    ring.rotate(T0 + 20 * H)
    rec, handle = ring.signer_for(KeyKind.JWT, T0 + 20 * H)
    assert handle.instance is new and rec.km_type == "webhook"
    assert not old.closed  # retired keys still published
    ring.rotate(T0 + 24 * H)
    assert sorted(old.released) == sorted(before)  # expired keys released before closing
    assert old.closed, "manager must be closed once its last key expired"
    assert not new.closed
    assert {r.km_type for r in ring.records()} == {"webhook"}


def test_manager_without_keys_is_dropped_on_next_swap() -> None:
    ring, a = make_ring()
    ring.rotate(T0)
    b = FakeKeyManager("b")
    ring.install_manager(handle_for(b))
    c = FakeKeyManager("c")
    dropped = ring.install_manager(handle_for(c))
    assert [h.instance for h in dropped] == [b]  # b never made a key
    assert not a.closed


def test_generation_failure_keeps_current_key_signing() -> None:
    ring, km = make_ring()
    ring.rotate(T0)
    km.fail_generate = True
    ring.rotate(T0 + 21 * H)
    assert ring.last_error and "generation disabled" in ring.last_error
    rec, _ = ring.signer_for(KeyKind.JWT, T0 + 21 * H)
    assert rec.state is KeyState.ACTIVE
    km.fail_generate = False
    ring.rotate(T0 + 21 * H + timedelta(seconds=10))
    assert ring.last_error is None
    cur = ring.current(KeyKind.JWT)
    assert cur is not None and cur.kid != rec.kid


def test_expired_current_without_successor_means_no_signer() -> None:
    ring, km = make_ring()
    ring.rotate(T0)
    km.fail_generate = True
    ring.rotate(T0 + 25 * H)
    with pytest.raises(NoActiveKeyError):
        ring.signer_for(KeyKind.JWT, T0 + 25 * H)


def test_restore_keeps_slots_and_key_types() -> None:
    ring, km = make_ring()
    ring.rotate(T0)
    ring.rotate(T0 + 12 * H)
    records = [type(r).from_dict(r.to_dict()) for r in ring.records()]
    handle = ring.active_manager
    assert handle is not None
    again = Keyring("example.org")
    again.adopt(handle)
    again.install_manager(handle)
    again.restore(records, T0 + 13 * H)
    assert {(r.kid, r.state) for r in again.records()} == {(r.kid, r.state) for r in ring.records()}
    assert not again.rotate(T0 + 13 * H)  # nothing to do: no new key after a restart


@pytest.mark.parametrize("key_type", list(KeyType))
def test_ca_certificate_for_every_key_type(key_type: KeyType) -> None:
    km = FakeKeyManager("default")
    ring = Keyring("example.org")
    ring.install_manager(handle_for(km, key_type=key_type))
    ring.rotate(T0)
    ca = ring.current(KeyKind.X509_CA)
    assert ca is not None and ca.key_type is key_type and ca.ca_cert_der
    cert = x509.load_der_x509_certificate(ca.ca_cert_der)
    cert.verify_directly_issued_by(cert)


def test_key_whose_manager_is_gone_after_restart_is_replaced_but_stays_published() -> None:
    ring, km = make_ring()
    ring.rotate(T0)
    records = [type(r).from_dict(r.to_dict()) for r in ring.records()]
    # Restart where the old manager could not be rebuilt; a new one is active.
    again = Keyring("example.org")
    fresh = FakeKeyManager("webhook")
    again.install_manager(handle_for(fresh))
    again.restore(records, T0 + H)
    with pytest.raises(NoActiveKeyError):
        again.signer_for(KeyKind.JWT, T0 + H)
    assert again.rotate(T0 + H)
    rec, handle = again.signer_for(KeyKind.JWT, T0 + H)
    assert handle.instance is fresh and rec.kid in fresh.generated
    published = {r.kid for r in again.published(T0 + H)}
    assert {r.kid for r in records} <= published  # old keys still verify outstanding SVIDs


# -- releases: expired keys leave the key manager ------------------------------------------


def _kinds(km: FakeKeyManager) -> dict[str, int]:
    out: dict[str, int] = {}
    for key_id in km.keys:
        kind = "jwt" if key_id.startswith("jwt-") else "x509-ca"
        out[kind] = out.get(kind, 0) + 1
    return out


def test_a_manager_holds_at_most_three_keys_per_kind_after_many_rotations() -> None:
    ring, km = make_ring(lifetimes=Lifetimes(x509_ca=H, jwt=H))
    now = T0
    most: dict[str, int] = {}
    for _ in range(400):  # 100 simulated hours, ~100 generations per kind
        ring.rotate(now)
        for kind, n in _kinds(km).items():
            most[kind] = max(most.get(kind, 0), n)
        now += timedelta(seconds=907)
    assert len(km.generated) > 150 and len(km.released) > 150
    assert most and max(most.values()) <= 3, most


def test_a_failed_release_is_retried_until_done_and_keeps_the_manager_open() -> None:
    ring, old = make_ring()
    ring.rotate(T0)
    expiring = {r.key_id for r in ring.records()}
    new = FakeKeyManager("webhook")
    ring.install_manager(handle_for(new))
    ring.rotate(T0 + 20 * H)  # new keys prepared and activated
    old.fail_release = True
    ring.rotate(T0 + 24 * H)  # the old keys expire; their release fails
    assert {p.record.key_id for p in ring.pending_releases()} == expiring
    assert not old.closed, "closed with keys still to release"
    calls = len(old.release_calls)
    ring.rotate(T0 + 24 * H + timedelta(seconds=30))  # before the retry delay: not called
    assert len(old.release_calls) == calls
    old.fail_release = False
    old.unfinished_releases = 2  # e.g. the purge waits for the deletion
    for minutes in (2, 5, 10):
        ring.rotate(T0 + 24 * H + timedelta(minutes=minutes))
    assert ring.pending_releases() == [] and set(old.released) == expiring
    assert old.closed


def test_restart_releases_keys_that_expired_while_the_server_was_down() -> None:
    ring, km = make_ring()
    ring.rotate(T0)
    records = [type(r).from_dict(r.to_dict()) for r in ring.records()]
    handle = ring.active_manager
    assert handle is not None
    again = Keyring("example.org")
    again.install_manager(handle)
    again.restore(records, T0 + 30 * H)  # down past the keys' not-after
    assert {p.record.kid for p in again.pending_releases()} == {r.kid for r in records}
    again.rotate(T0 + 30 * H)
    assert sorted(km.released) == sorted(r.key_id for r in records)
    assert again.pending_releases() == []


def test_pending_releases_survive_a_restart() -> None:
    from controlplane.trust_domain_server.keyring import PendingRelease

    ring, km = make_ring()
    ring.rotate(T0)
    km.fail_release = True
    ring.rotate(T0 + 25 * H)
    pending = [PendingRelease.from_dict(p.to_dict()) for p in ring.pending_releases()]
    assert pending and all(p.attempts == 1 and p.not_before for p in pending)
    handle = ring.active_manager
    assert handle is not None
    km.fail_release = False
    again = Keyring("example.org")
    again.install_manager(handle)
    again.restore([], T0 + 26 * H, pending)
    again.rotate(T0 + 26 * H)
    assert again.pending_releases() == [] and len(km.released) == 2


def test_failed_generation_is_retried_with_a_growing_delay() -> None:
    ring, km = make_ring()
    ring.rotate(T0)
    km.fail_generate = True
    attempts = []
    now = T0 + 12 * H
    for _ in range(60):  # ten minutes of 10 s ticks
        before = km.generate_calls
        ring.rotate(now)
        if km.generate_calls > before:
            attempts.append(now)
        now += timedelta(seconds=10)
    gaps = [(b - a).total_seconds() for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[:5] == [10, 20, 40, 80, 160] and max(gaps) <= 300
    assert ring.last_error and "generating" in ring.last_error
    km.fail_generate = False
    ring.rotate(now + timedelta(minutes=5))
    assert ring.last_error is None
