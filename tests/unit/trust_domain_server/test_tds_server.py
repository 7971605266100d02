"""Runtime core: hot swap, NACK, persistence across a restart, status and bundle views."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from unit.trust_domain_server.tds_fakes import FakeKeyManager

from controlplane.keymanagers import KeyManagerContext, build_key_manager, key_manager_digest
from controlplane.trust_domain_server.clock import ManualClock
from controlplane.trust_domain_server.keyring import KeyKind, KeyState
from controlplane.trust_domain_server.server import TrustDomainServer
from controlplane.trust_domain_server.state import StateStore

T0 = datetime(2030, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
SID = "spiffe://example.org/web"


class Factory:
    """Builds fake key managers from a spec; `fail` in the extension makes check() fail."""

    def __init__(self) -> None:
        self.built: list[FakeKeyManager] = []

    def __call__(self, spec: Any) -> FakeKeyManager:
        exts = spec.get("extensions") or {"default": {}}
        ((name, conf),) = exts.items()
        km = FakeKeyManager(name, fail_check=(conf or {}).get("fail"))
        self.built.append(km)
        return km


def config(
    version: int, ext: dict[str, Any] | None = None, lifecycle: dict[str, str] | None = None
) -> dict[str, Any]:
    sections: dict[str, Any] = {}
    if ext is not None:
        sections["KeyManager"] = {
            "scope": "cluster",
            "schema": "v1",
            "document": {"section": "KeyManager", "schema": "v1", "spec": {"extensions": ext}},
        }
    if lifecycle:
        sections["KeyLifecycle"] = {
            "document": {"section": "KeyLifecycle", "schema": "v1", "spec": lifecycle}
        }
    return {"version": version, "sections": sections}


def make(tmp_path: Path | None = None) -> tuple[TrustDomainServer, Factory, ManualClock]:
    clock = ManualClock(T0)
    factory = Factory()
    store = StateStore(tmp_path) if tmp_path else None
    return (
        TrustDomainServer("example.org", clock, factory, key_manager_digest, store),
        factory,
        clock,
    )


def verify_jwt(server: TrustDomainServer, token: str, at: datetime) -> dict[str, Any]:
    kid = jwt.get_unverified_header(token)["kid"]
    keys = {k["kid"]: k for k in server.bundle_document()["keys"] if k["use"] == "jwt-svid"}
    key = jwt.PyJWK.from_json(json.dumps(keys[kid]))
    return jwt.decode(
        token,
        key.key,
        algorithms=[key.algorithm_name],
        audience="a",
        options={"verify_exp": False, "verify_iat": False},
    )


def test_swap_creates_no_key_then_rotation_moves_to_new_manager() -> None:
    server, factory, clock = make()
    assert server.apply_config(config(1))
    server.rotate()
    default = factory.built[0]
    token = server.issuer.issue_jwt(SID, ["a"], H)
    assert len(default.generated) == 2

    assert server.apply_config(config(2, {"webhook": {"url": "https://k"}}))
    webhook = factory.built[1]
    assert webhook.checks == 1 and webhook.generated == []
    assert server.keyring.active_manager and server.keyring.active_manager.type == "webhook"
    report = server.status_report()
    assert report["applied_version"] == 2 and report["health"] == "HEALTHY"
    assert report["key_manager"]["type"] == "webhook"
    assert {k["key_manager"]["type"] for k in report["keys"]} == {"default"}
    # what the console's key timeline draws: creation time, key type, and the server's clock
    records = {r.kid: r for r in server.keyring.records()}
    for key in report["keys"]:
        assert key["not_before"] == records[key["kid"]].not_before.isoformat()
        assert key["key_type"] == records[key["kid"]].key_type.value
        assert key.get("provider_ref", "") == records[key["kid"]].provider_ref
    assert report["reported_at"] == clock.now().isoformat()
    # Old keys keep signing until rotation.
    assert (
        jwt.get_unverified_header(server.issuer.issue_jwt(SID, ["a"]))["kid"] in default.generated
    )

    clock.set(T0 + 20 * H)
    server.rotate()
    assert len(webhook.generated) == 2
    token2 = server.issuer.issue_jwt(SID, ["a"])
    assert jwt.get_unverified_header(token2)["kid"] in webhook.generated
    # The SVID from before the swap still verifies against the bundle after rotation.
    assert verify_jwt(server, token, clock.now())["sub"] == SID
    assert verify_jwt(server, token2, clock.now())["sub"] == SID
    clock.set(T0 + 24 * H)
    server.rotate()
    assert default.closed and not webhook.closed


def test_same_config_again_is_no_swap() -> None:
    server, factory, _ = make()
    server.apply_config(config(1, {"webhook": {"url": "u"}}))
    server.apply_config(config(2, {"webhook": {"url": "u"}}))
    assert len(factory.built) == 1 and server.metrics.swaps == 0


def test_nack_keeps_old_manager_and_issuance_goes_on() -> None:
    server, factory, clock = make()
    server.apply_config(config(1))
    server.rotate()
    before = server.keyring.active_manager
    assert not server.apply_config(
        config(2, {"webhook": {"url": "u", "fail": "connection refused to 127.0.0.1:9"}})
    )
    rejected = factory.built[1]
    assert rejected.closed and rejected.generated == []
    assert server.keyring.active_manager is before
    report = server.status_report()
    assert report["health"] == "UNHEALTHY"
    assert "connection refused" in report["error"] and "version 2" in report["error"]
    assert report["applied_version"] == 1 and report["attempted_version"] == 2
    assert report["refused_version"] == 2  # a refusal, not a rotation error
    assert server.metrics.nacks == 1
    assert server.issuer.issue_jwt(SID, ["a"])  # no failed issuance
    # A fixed config applies and clears the error.
    assert server.apply_config(config(3, {"webhook": {"url": "u2"}}))
    assert server.status_report()["health"] == "HEALTHY" and server.status_report()["error"] is None
    assert server.status_report()["refused_version"] is None


def test_bad_lifecycle_is_nack_and_lifetimes_apply_to_next_keys() -> None:
    server, _, clock = make()
    assert not server.apply_config(config(1, None, {"x509CATTL": "soon"}))
    assert server.apply_config(config(2, None, {"x509CATTL": "2h", "jwtKeyTTL": "1h"}))
    server.rotate()
    ca = server.keyring.current(KeyKind.X509_CA)
    jw = server.keyring.current(KeyKind.JWT)
    assert ca and jw and ca.lifetime == 2 * H and jw.lifetime == H


def test_bundle_merges_control_plane_keys_and_own_keys() -> None:
    server, _, _ = make()
    server.apply_config(config(1))
    server.rotate()
    before = server.bundle_document()["spiffe_sequence"]
    other = {"kty": "EC", "kid": "other-server-key", "use": "jwt-svid"}
    server.set_bundle({"version": 7, "keys": [other]})
    doc = server.bundle_document()
    # Its own sequence (the control plane's 7 numbers another source), bumped by the change.
    assert doc["spiffe_sequence"] == before + 1
    jwt_keys = {k["kid"]: k for k in doc["keys"] if k["use"] == "jwt-svid"}
    current_jwt = server.keyring.current(KeyKind.JWT)
    assert current_jwt and set(jwt_keys) == {current_jwt.kid, "other-server-key"}
    ca = server.keyring.current(KeyKind.X509_CA)
    assert ca and ca.ca_cert_der
    [x509_entry] = [k for k in doc["keys"] if k["use"] == "x509-svid"]
    assert "kid" not in x509_entry
    assert x509_entry["x5c"] == [base64.b64encode(ca.ca_cert_der).decode()]
    # The same content again keeps the number.
    server.set_bundle({"version": 8, "keys": [other]})
    assert server.bundle_document()["spiffe_sequence"] == before + 1


def test_restart_serves_with_same_keys_using_real_default_key_manager(tmp_path: Path) -> None:
    ctx = KeyManagerContext(
        data_dir=tmp_path / "km", kek=os.urandom(32), trust_domain="example.org", server_id="s1"
    )
    clock = ManualClock(T0)

    def build(spec: Any) -> Any:
        return build_key_manager(spec, ctx)

    first = TrustDomainServer(
        "example.org", clock, build, key_manager_digest, StateStore(tmp_path / "d")
    )
    first.apply_config(config(4))
    first.rotate()
    token = first.issuer.issue_jwt(SID, ["a"], H)
    kids = {(r.kid, r.state) for r in first.keyring.records()}
    first.close()
    assert stat.S_IMODE(os.stat(tmp_path / "d" / "state.json").st_mode) == 0o600

    clock.advance(H)
    second = TrustDomainServer(
        "example.org", clock, build, key_manager_digest, StateStore(tmp_path / "d")
    )
    assert second.restore()
    assert {(r.kid, r.state) for r in second.keyring.records()} == kids
    assert not second.rotate()  # no new keys
    assert second.applied_version == 4
    token2 = second.issuer.issue_jwt(SID, ["a"], H)
    assert jwt.get_unverified_header(token2)["kid"] == jwt.get_unverified_header(token)["kid"]
    assert verify_jwt(second, token2, clock.now())["sub"] == SID
    leaf, ca = second.issuer.issue_x509(SID, _csr())
    leaf.verify_directly_issued_by(ca)


def test_restart_between_rotation_and_release_leaves_no_key_behind(tmp_path: Path) -> None:
    """The real default key manager (its keys are files): keys that expire while the server is
    down are released after the restart; none that still signs is."""
    ctx = KeyManagerContext(
        data_dir=tmp_path / "km", kek=os.urandom(32), trust_domain="example.org", server_id="s1"
    )
    clock = ManualClock(T0)

    def build(spec: Any) -> Any:
        return build_key_manager(spec, ctx)

    def key_files() -> set[str]:
        return {p.name for p in (tmp_path / "km" / "default-keys").iterdir() if p.is_file()}

    first = TrustDomainServer(
        "example.org", clock, build, key_manager_digest, StateStore(tmp_path / "d")
    )
    first.apply_config(config(1, lifecycle={"x509CATTL": "6h", "jwtKeyTTL": "6h"}))
    first.rotate()
    old = {r.key_id for r in first.keyring.records()}
    clock.advance(5 * H + timedelta(minutes=1))  # next keys prepared and active
    first.rotate()
    first.close()
    files_before = key_files()
    assert len(files_before) >= 4

    clock.advance(H)  # the first keys expire while the server is down
    second = TrustDomainServer(
        "example.org", clock, build, key_manager_digest, StateStore(tmp_path / "d")
    )
    assert second.restore()
    assert {p.record.key_id for p in second.keyring.pending_releases()} == old
    second.rotate()
    assert second.keyring.pending_releases() == []
    in_use = {r.key_id for r in second.keyring.records()}
    assert in_use and not in_use & old
    assert len(key_files()) == len(files_before) - len(old)
    second.issuer.issue_jwt(SID, ["a"], H)  # the active keys were not touched


def test_restore_keeps_state_file_intact_before_any_close(tmp_path: Path) -> None:
    # Installing the active manager at restore fires a save(); it must not write an empty
    # state (no keys, no applied version) over the persisted one.
    ctx = KeyManagerContext(
        data_dir=tmp_path / "km", kek=os.urandom(32), trust_domain="example.org", server_id="s1"
    )
    clock = ManualClock(T0)

    def build(spec: Any) -> Any:
        return build_key_manager(spec, ctx)

    first = TrustDomainServer(
        "example.org", clock, build, key_manager_digest, StateStore(tmp_path / "d")
    )
    first.apply_config(config(4))
    first.rotate()
    kids = sorted(r.kid for r in first.keyring.records())
    assert kids
    first.close()

    second = TrustDomainServer(
        "example.org", clock, build, key_manager_digest, StateStore(tmp_path / "d")
    )
    assert second.restore()
    on_disk = json.loads((tmp_path / "d" / "state.json").read_text(encoding="utf-8"))
    assert sorted(k["kid"] for k in on_disk["keys"]) == kids
    assert on_disk["applied_version"] == 4
    assert on_disk["active_manager"] is not None
    second.close()


def test_concurrent_saves_keep_state_file_valid(tmp_path: Path) -> None:
    server, _, _ = make(tmp_path)
    server.apply_config(config(3))
    server.rotate()
    path = tmp_path / "state.json"
    errors: list[BaseException] = []
    stop = threading.Event()

    def saver() -> None:
        try:
            for _ in range(100):
                server.save()
        except BaseException as exc:  # any failure fails the test
            errors.append(exc)

    def reader() -> None:
        while not stop.is_set():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                assert data["applied_version"] == 3 and data["keys"]
            except BaseException as exc:
                errors.append(exc)
                return

    watcher = threading.Thread(target=reader)
    watcher.start()
    threads = [threading.Thread(target=saver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert errors == []
    assert json.loads(path.read_text(encoding="utf-8"))["applied_version"] == 3
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_status_keys_carry_public_material_only() -> None:
    server, _, _ = make()
    server.apply_config(config(1))
    server.rotate()
    for key in server.status_report()["keys"]:
        assert "d" not in key["jwk"]
        assert key["state"] == KeyState.ACTIVE.value
        assert (key["kind"] == "x509-ca") == ("x5c" in key)
    local = server.local_status()
    assert local["key_manager"]["type"] == "default" and all("jwk" not in k for k in local["keys"])


def _csr() -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
