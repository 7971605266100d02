"""The local HTTP API over the real runtime core, served by a real uvicorn on 127.0.0.1:0."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from unit.trust_domain_server.tds_fakes import FakeKeyManager

from controlplane.keymanagers import key_manager_digest
from controlplane.trust_domain_server.api import MAX_BODY, create_app
from controlplane.trust_domain_server.clock import FileOffsetClock, ManualClock
from controlplane.trust_domain_server.server import TrustDomainServer

SID = "spiffe://example.org/api"


SERVER_THREAD = "tds-api-loop"


@contextmanager
def serve(
    manager: FakeKeyManager | None = None,
    token: str | None = None,
    prefixes: tuple[str, ...] = (),
) -> Iterator[tuple[httpx.Client, TrustDomainServer]]:
    """The API on a real uvicorn whose event loop runs in a thread named SERVER_THREAD."""
    server = TrustDomainServer(
        "example.org",
        ManualClock(datetime(2030, 1, 1, tzinfo=UTC)),
        lambda spec: manager or FakeKeyManager("default"),
        key_manager_digest,
        allowed_path_prefixes=prefixes,
    )
    server.apply_config({"version": 1, "sections": {}})
    server.rotate()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    http = uvicorn.Server(
        uvicorn.Config(create_app(server, token), log_level="warning", lifespan="off")
    )
    thread = threading.Thread(
        target=http.run, kwargs={"sockets": [sock]}, daemon=True, name=SERVER_THREAD
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not http.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        yield c, server
    http.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def served() -> Iterator[tuple[httpx.Client, TrustDomainServer]]:
    with serve() as pair:
        yield pair


def _csr_pem() -> str:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


@pytest.mark.parametrize("local", [True, False])
def test_local_managers_sign_on_the_loop_network_ones_in_a_worker(local: bool) -> None:
    # A local (CPU-only) manager is called inline on the event loop; any other manager in
    # the thread pool, so a slow network call cannot stall the loop.
    manager = FakeKeyManager("default" if local else "webhook")
    if local:
        manager.signs_locally = True  # type: ignore[attr-defined]
    with serve(manager) as (c, _):
        r = c.post("/v1/svid/jwt", json={"spiffe_id": SID, "audience": ["a"]})
        assert r.status_code == 200, r.text
        r = c.post("/v1/svid/x509", json={"spiffe_id": SID, "csr": _csr_pem()})
        assert r.status_code == 200, r.text
        # The same validation errors either way, counted once.
        r = c.post("/v1/svid/jwt", json={"spiffe_id": "spiffe://other.org/x", "audience": ["a"]})
        assert r.status_code == 400 and "trust domain" in r.json()["message"]
        metrics = c.get("/metrics").text
    # Signs made during rotate() ran in the test's thread; the two issuances are the last two.
    on_loop = [name == SERVER_THREAD for name in manager.sign_threads[-2:]]
    assert on_loop == [local, local], manager.sign_threads
    assert 'tds_svid_issued_total{type="jwt"} 1' in metrics
    assert 'tds_svid_issued_total{type="x509"} 1' in metrics
    assert 'tds_svid_failures_total{type="jwt",reason="bad_request"} 1' in metrics


def test_jwt_and_x509_and_bundle(served: tuple[httpx.Client, TrustDomainServer]) -> None:
    c, server = served
    r = c.post("/v1/svid/jwt", json={"spiffe_id": SID, "audience": ["a"], "ttl": "5m"})
    assert r.status_code == 200
    token = r.json()["token"]
    bundle = c.get("/v1/bundle").json()
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in bundle["keys"] if k["kid"] == kid)
    assert jwk["use"] == "jwt-svid"
    key = jwt.PyJWK.from_json(json.dumps(jwk))
    claims = jwt.decode(
        token,
        key.key,
        algorithms=[key.algorithm_name],
        audience="a",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["exp"] - claims["iat"] == 300

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    r = c.post("/v1/svid/x509", json={"spiffe_id": SID, "csr": csr})
    assert r.status_code == 200
    leaf, ca = x509.load_pem_x509_certificates(r.json()["certificates"].encode())
    leaf.verify_directly_issued_by(ca)
    # X509-SVID spec §6.1: no kid, exactly the one CA certificate.
    ca_der = base64.b64encode(ca.public_bytes(serialization.Encoding.DER)).decode()
    [entry] = [k for k in bundle["keys"] if k["use"] == "x509-svid"]
    assert "kid" not in entry and entry["x5c"] == [ca_der]


def test_errors_are_400_with_reason(served: tuple[httpx.Client, TrustDomainServer]) -> None:
    c, _ = served
    cases = [
        ({"spiffe_id": SID, "audience": ["a"], "ttl": "5 minutes"}, "ttl"),
        ({"spiffe_id": SID, "audience": ["a"], "ttl": "5h"}, "exceeds"),
        ({"spiffe_id": "spiffe://other.org/x", "audience": ["a"]}, "trust domain"),
        ({"spiffe_id": SID}, "audience"),
        # Numbers that do not fit a timedelta (OverflowError, ValueError before).
        ({"spiffe_id": SID, "audience": ["a"], "ttl": 1e20}, "ttl must be"),
        ({"spiffe_id": SID, "audience": ["a"], "ttl": -5}, "ttl must be"),
    ]
    for body, fragment in cases:
        r = c.post("/v1/svid/jwt", json=body)
        assert r.status_code == 400 and r.json()["error"] == "bad_request"
        assert fragment in r.json()["message"], r.json()
    r = c.post("/v1/svid/jwt", content=b"{not json")
    assert r.status_code == 400
    # NaN is not JSON but Python's json reads it: still a 400 naming the ttl.
    r = c.post(
        "/v1/svid/jwt", content=b'{"spiffe_id": "%s", "audience": ["a"], "ttl": NaN}' % SID.encode()
    )
    assert r.status_code == 400 and "ttl must be" in r.json()["message"]
    r = c.post("/v1/svid/x509", json={"spiffe_id": SID, "csr": "-----BEGIN nonsense"})
    assert r.status_code == 400 and "csr" in r.json()["message"]
    metrics = c.get("/metrics").text
    assert 'tds_svid_failures_total{type="jwt",reason="bad_request"} 8' in metrics


def test_status_and_metrics(served: tuple[httpx.Client, TrustDomainServer]) -> None:
    c, _ = served
    c.post("/v1/svid/jwt", json={"spiffe_id": SID, "audience": ["a"]})
    status = c.get("/v1/status").json()
    assert status["applied_version"] == 1 and status["key_manager"]["type"] == "default"
    assert {k["kind"] for k in status["keys"]} == {"jwt", "x509-ca"}
    assert all({"kid", "state", "not_after", "key_manager"} <= set(k) for k in status["keys"])
    metrics = c.get("/metrics").text
    assert 'tds_svid_issued_total{type="jwt"} 1' in metrics
    assert 'tds_keys{kind="jwt",state="active"} 1' in metrics
    assert 'tds_sign_seconds_count{key_manager="default"}' in metrics


def test_file_offset_clock(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    clock = FileOffsetClock(path, reread=0)
    before = clock.now()
    assert abs((before - datetime.now(UTC)).total_seconds()) < 5  # no file: no offset
    path.write_text("86400")
    assert (clock.now() - datetime.now(UTC)).total_seconds() > 86000
    path.write_text("garbage")  # unreadable: keeps the last offset
    assert (clock.now() - datetime.now(UTC)).total_seconds() > 86000


def test_with_a_token_every_route_but_healthz_needs_it() -> None:
    with serve(token="s3cret") as (c, server):
        for method, path in [
            ("POST", "/v1/svid/jwt"),
            ("POST", "/v1/svid/x509"),
            ("GET", "/v1/bundle"),
            ("GET", "/v1/status"),
            ("GET", "/metrics"),
        ]:
            for header in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                r = c.request(method, path, headers=header, json={"spiffe_id": SID})
                assert r.status_code == 401 and r.json()["error"] == "unauthenticated", path
        assert c.get("/healthz").status_code == 200
        assert dict(server.metrics.issued) == {}  # nothing was signed
        r = c.post(
            "/v1/svid/jwt",
            json={"spiffe_id": SID, "audience": ["a"]},
            headers={"Authorization": "Bearer s3cret"},
        )
        assert r.status_code == 200, r.text


def test_issuance_can_be_limited_to_path_prefixes() -> None:
    with serve(prefixes=("/ns/prod", "/ops")) as (c, _):
        for path, status in [
            ("/ns/prod", 200),
            ("/ns/prod/web", 200),
            ("/ops/backup/daily", 200),
            ("/ns/production", 403),
            ("/ns", 403),
            ("/other", 403),
        ]:
            r = c.post(
                "/v1/svid/jwt",
                json={"spiffe_id": f"spiffe://example.org{path}", "audience": ["a"]},
            )
            assert r.status_code == status, (path, r.text)
            if status == 403:
                assert r.json()["error"] == "forbidden" and "/ns/prod" in r.json()["message"]
        r = c.post("/v1/svid/x509", json={"spiffe_id": "spiffe://example.org/x", "csr": _csr_pem()})
        assert r.status_code == 403
        # Outside the trust domain stays a 400, as without prefixes.
        r = c.post(
            "/v1/svid/jwt", json={"spiffe_id": "spiffe://other.org/ns/prod", "audience": ["a"]}
        )
        assert r.status_code == 400


def test_a_body_over_the_limit_is_refused_before_it_is_read(
    served: tuple[httpx.Client, TrustDomainServer],
) -> None:
    c, _ = served
    over = b'{"spiffe_id": "' + b"a" * MAX_BODY + b'"}'
    # Declared too large: the answer comes before the body is sent (the old code waited for all
    # of it, so this read timed out).
    host, port = c.base_url.host, c.base_url.port
    assert port is not None
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/svid/jwt HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n{"
        )
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head
    # Streamed without a length: refused once the limit is passed.
    r = c.post("/v1/svid/jwt", content=iter([over[:40_000], over[40_000:]]))
    assert r.status_code == 413 and r.json()["error"] == "input_rejected"
    # At the limit it is read (and refused for what it says, not for its size).
    r = c.post("/v1/svid/jwt", content=b" " * (MAX_BODY - 2) + b"{}")
    assert r.status_code == 400 and r.json()["error"] == "bad_request"
    assert c.get("/healthz").status_code == 200
