"""TLS helpers: clear errors for unusable files, which URLs get the plain-HTTP warning."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from controlplane.emulators.tls import ensure_tls_files
from controlplane.tls import (
    TlsConfigError,
    client_verify,
    plain_http_warning,
    server_context,
    verification_failure,
)


def test_server_context_names_the_file_that_is_wrong(tmp_path: Path) -> None:
    files = ensure_tls_files(tmp_path / "a")
    other = ensure_tls_files(tmp_path / "b")
    assert isinstance(server_context(files.cert_file, files.key_file), ssl.SSLContext)
    with pytest.raises(TlsConfigError, match="--tls-key"):
        server_context(files.cert_file, tmp_path / "missing.pem")
    with pytest.raises(TlsConfigError, match="--tls-cert"):
        server_context(files.cert_file, other.key_file)  # a key that is not the certificate's


def test_client_verify_trusts_only_the_ca_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SPIRL_CA_FILE", raising=False)
    files = ensure_tls_files(tmp_path)
    assert client_verify(None) is True
    context = client_verify(files.ca_file)
    assert isinstance(context, ssl.SSLContext)
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "spirl loopback test CA"),),)
    ]
    monkeypatch.setenv("SPIRL_CA_FILE", str(files.ca_file))
    assert isinstance(client_verify(None), ssl.SSLContext)
    with pytest.raises(TlsConfigError, match="no such file"):
        client_verify(tmp_path / "missing.pem")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    with pytest.raises(TlsConfigError, match="no usable PEM certificate"):
        client_verify(not_pem)


def test_plain_http_warning_is_for_other_hosts_only() -> None:
    assert plain_http_warning("http://127.0.0.1:8080", "tokens") is None
    assert plain_http_warning("http://[::1]:8080", "tokens") is None
    assert plain_http_warning("http://localhost:8080", "tokens") is None
    assert plain_http_warning("https://cp.example.org", "tokens") is None
    warning = plain_http_warning("http://10.0.0.5:8080", "tokens")
    assert warning is not None and "tokens" in warning and "--tls-cert" in warning


def test_verification_failure_is_found_in_the_cause_chain() -> None:
    refused = ssl.SSLCertVerificationError(1, "certificate verify failed")
    refused.verify_message = "unable to get local issuer certificate"
    try:
        try:
            raise refused
        except ssl.SSLError as exc:
            raise ConnectionError("wrapped") from exc
    except ConnectionError as outer:
        assert verification_failure(outer) == "unable to get local issuer certificate"
    assert verification_failure(ConnectionError("refused")) is None
