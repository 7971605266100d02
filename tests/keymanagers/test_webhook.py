"""The webhook key manager against a real key service process (controlplane.emulators.keyservice)."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controlplane.emulators.keyservice import KeyServiceProcess, start_keyservice
from controlplane.keymanagers.base import (
    HashAlgorithm,
    KeyManagerError,
    KeyNotFoundError,
    KeyType,
    SigningAlgorithm,
    TransientKeyManagerError,
)
from controlplane.keymanagers.signatures import digest
from controlplane.keymanagers.webhook import WebhookKeyManager, redact_url

from contract import KeyManagerContract, assert_signs_and_verifies

SHA256 = SigningAlgorithm(HashAlgorithm.SHA256)


class TestWebhookKeyManagerContract(KeyManagerContract):
    @pytest.fixture
    def key_manager(self, webhook_url: str) -> Iterator[WebhookKeyManager]:
        manager = WebhookKeyManager({"webhookURL": webhook_url, "timeout": "10s"})
        yield manager
        manager.close()


@pytest.fixture
def manager(webhook_url: str) -> Iterator[WebhookKeyManager]:
    m = WebhookKeyManager({"webhookURL": webhook_url})
    yield m
    m.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({}, "needs webhookURL"),
        ({"webhookURL": "ftp://127.0.0.1/x"}, "http or https"),
        ({"webhookURL": "https:///nohost"}, "http or https"),
        ({"webhookURL": "http://127.0.0.1", "timeout": "soon"}, "timeout 'soon'"),
        ({"webhookURL": "http://127.0.0.1", "timeout": 0}, "longer than zero"),
        ({"webhookURL": "https://127.0.0.1", "caCertPath": "/nonexistent/ca.pem"}, "caCertPath"),
    ],
)
def test_bad_config_rejected(config: dict[str, Any], reason: str) -> None:
    with pytest.raises(KeyManagerError, match=reason):
        WebhookKeyManager(config)


def test_timeout_parsed_from_duration() -> None:
    manager = WebhookKeyManager({"webhookURL": "http://127.0.0.1:1", "timeout": "1m30s"})
    assert manager._timeout == 90.0
    assert WebhookKeyManager({"webhookURL": "http://127.0.0.1:1"})._timeout == 5.0


def test_redact_url() -> None:
    assert redact_url("https://u:pw@h.example:8443/a?token=x#f") == "https://h.example:8443/a"


# -- protocol behaviour --------------------------------------------------------------------------


def test_get_public_key_served_from_cache(
    manager: WebhookKeyManager, keyservice: KeyServiceProcess
) -> None:
    key = manager.generate_key("cached", KeyType.EC_P256)
    before = keyservice.stats().get("list", 0)
    assert manager.get_public_key("cached") == key
    assert keyservice.stats().get("list", 0) == before, "a cached key caused a list call"


def test_cache_miss_falls_back_to_list(webhook_url: str) -> None:
    maker = WebhookKeyManager({"webhookURL": webhook_url})
    reader = WebhookKeyManager({"webhookURL": webhook_url})
    key = maker.generate_key("from-elsewhere", KeyType.EC_P384)
    assert reader.get_public_key("from-elsewhere").public_key_der == key.public_key_der
    assert_signs_and_verifies(reader, key)


def test_namespaces_are_isolated(keyservice: KeyServiceProcess) -> None:
    a = WebhookKeyManager({"webhookURL": keyservice.namespace_url("iso-a")})
    b = WebhookKeyManager({"webhookURL": keyservice.namespace_url("iso-b")})
    a.generate_key("only-in-a", KeyType.EC_P256)
    assert "only-in-a" not in {k.key_id for k in b.list_public_keys()}
    with pytest.raises(KeyNotFoundError):
        b.sign_digest("only-in-a", digest(b"x", HashAlgorithm.SHA256), SHA256)


def test_key_id_with_reserved_characters(manager: WebhookKeyManager) -> None:
    key = manager.generate_key("x509-ca/2024?v=1#a b", KeyType.EC_P256)
    assert_signs_and_verifies(manager, key)
    assert [k.key_id for k in manager.list_public_keys()] == [key.key_id]


def test_release_key(manager: WebhookKeyManager) -> None:
    manager.generate_key("released", KeyType.EC_P256)
    manager.release_key("released")
    with pytest.raises(KeyNotFoundError):
        manager.get_public_key("released")
    with pytest.raises(KeyNotFoundError):
        manager.sign_digest("released", digest(b"x", HashAlgorithm.SHA256), SHA256)
    with pytest.raises(KeyNotFoundError):
        manager.release_key("released")


def test_keys_survive_a_service_restart(tmp_path: Path) -> None:
    with start_keyservice(tmp_path) as first:
        url = first.namespace_url("restart")
        key = WebhookKeyManager({"webhookURL": url}).generate_key("kept", KeyType.RSA_2048)
    with start_keyservice(tmp_path) as second:
        manager = WebhookKeyManager({"webhookURL": second.namespace_url("restart")})
        assert manager.get_public_key("kept").public_key_der == key.public_key_der
        assert_signs_and_verifies(manager, key, rsa_pss=True)


# -- failures map onto the contract's errors ------------------------------------------------------


def test_5xx_is_transient_then_recovers(
    manager: WebhookKeyManager, keyservice: KeyServiceProcess
) -> None:
    key = manager.generate_key("flaky", KeyType.EC_P256)
    keyservice.inject_faults(status=503, count=1)
    try:
        with pytest.raises(TransientKeyManagerError, match="503"):
            manager.sign_digest("flaky", digest(b"x", HashAlgorithm.SHA256), SHA256)
    finally:
        keyservice.clear_faults()
    assert_signs_and_verifies(manager, key)


def test_429_is_transient(manager: WebhookKeyManager, keyservice: KeyServiceProcess) -> None:
    keyservice.inject_faults(status=429, count=1)
    try:
        with pytest.raises(TransientKeyManagerError, match="429"):
            manager.check()
    finally:
        keyservice.clear_faults()
    manager.check()


def test_timeout_is_transient(webhook_url: str, keyservice: KeyServiceProcess) -> None:
    manager = WebhookKeyManager({"webhookURL": webhook_url, "timeout": 0.3})
    keyservice.inject_faults(status=None, count=1, delay_seconds=1.0)
    try:
        with pytest.raises(TransientKeyManagerError, match="did not answer"):
            manager.check()
    finally:
        keyservice.clear_faults()


def test_unreachable_service_is_transient() -> None:
    manager = WebhookKeyManager({"webhookURL": f"http://127.0.0.1:{_free_port()}/ks"})
    with pytest.raises(TransientKeyManagerError, match="cannot reach"):
        manager.check()
    with pytest.raises(TransientKeyManagerError):
        manager.generate_key("k", KeyType.EC_P256)


def test_wrong_url_is_not_a_key_not_found(keyservice: KeyServiceProcess) -> None:
    manager = WebhookKeyManager({"webhookURL": f"{keyservice.url}/_control"})
    with pytest.raises(
        KeyManagerError, match="does not serve the webhook key service protocol"
    ) as info:
        manager.check()
    assert not isinstance(info.value, KeyNotFoundError)


def test_bad_request_is_a_plain_error(manager: WebhookKeyManager) -> None:
    key = manager.generate_key("pss-on-ec", KeyType.EC_P256)
    pss = SigningAlgorithm(HashAlgorithm.SHA256, rsa_pss=True)
    with pytest.raises(KeyManagerError, match="400") as info:
        manager.sign_digest(key.key_id, digest(b"x", HashAlgorithm.SHA256), pss)
    assert not isinstance(info.value, TransientKeyManagerError)


def test_userinfo_never_appears_in_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://user:s3cr3t-token@127.0.0.1:{_free_port()}/ks?sig=s3cr3t-token"
    manager = WebhookKeyManager({"webhookURL": url})
    with pytest.raises(TransientKeyManagerError) as info:
        manager.check()
    assert "s3cr3t" not in str(info.value)
    assert "s3cr3t" not in repr(manager)
    assert "s3cr3t" not in caplog.text


def test_closed_manager_refuses_work(manager: WebhookKeyManager) -> None:
    manager.close()
    with pytest.raises(KeyManagerError, match="closed"):
        manager.check()


# -- TLS with caCertPath -------------------------------------------------------------------------


def test_tls_with_ca_cert_path(tmp_path: Path) -> None:
    with start_keyservice(tmp_path, tls=True) as service:
        assert service.url.startswith("https://") and service.ca_file is not None
        url = service.namespace_url("tls")
        trusted = WebhookKeyManager({"webhookURL": url, "caCertPath": str(service.ca_file)})
        trusted.check()
        key = trusted.generate_key("tls-key", KeyType.EC_P256)
        assert_signs_and_verifies(trusted, key)
        untrusted = WebhookKeyManager({"webhookURL": url})
        with pytest.raises(KeyManagerError, match="TLS verification") as info:
            untrusted.check()
        assert not isinstance(info.value, TransientKeyManagerError)


# -- a service that lies -------------------------------------------------------------------------


class _LyingHandler(BaseHTTPRequestHandler):
    answers: dict[str, Any] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        status, body = self.answers[f"{self.command} {self.path}"]
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer


@pytest.fixture
def lying_service() -> Iterator[tuple[str, dict[str, Any]]]:
    """A real HTTP server whose answers each test sets (the real key service never lies)."""
    answers: dict[str, Any] = {}
    handler = type("Handler", (_LyingHandler,), {"answers": answers})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answers
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ((200, b"not json"), "not JSON"),
        ((200, {"keys": "nope"}), "must be a list"),
        (
            (200, {"keys": [{"key_id": "a", "key_type": "ec-p999", "public_key": ""}]}),
            "unknown key_type",
        ),
        (
            (200, {"keys": [{"key_id": "a", "key_type": "ec-p256", "public_key": "AAAA"}]}),
            "not a DER",
        ),
    ],
)
def test_malformed_answers_are_clear_errors(
    lying_service: tuple[str, dict[str, Any]], answer: Any, reason: str
) -> None:
    url, answers = lying_service
    answers["GET /keys"] = answer
    with pytest.raises(KeyManagerError, match=reason):
        WebhookKeyManager({"webhookURL": url}).check()


def test_generate_answer_with_wrong_key_type_rejected(
    lying_service: tuple[str, dict[str, Any]], keyservice: KeyServiceProcess
) -> None:
    # Borrow a genuine P-384 public key, then have the liar return it for a P-256 request.
    real = WebhookKeyManager({"webhookURL": keyservice.namespace_url("liar-src")})
    p384 = real.generate_key("k", KeyType.EC_P384)
    url, answers = lying_service
    answers["POST /keys"] = (
        201,
        {
            "key_id": "k",
            "key_type": "ec-p256",
            "public_key": base64.b64encode(p384.public_key_der).decode(),
        },
    )
    with pytest.raises(KeyManagerError, match="says ec-p256 but holds ec-p384"):
        WebhookKeyManager({"webhookURL": url}).generate_key("k", KeyType.EC_P256)
