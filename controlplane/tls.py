"""TLS for the control plane's listener and for its clients (spirlctl, spirl-tds, the provider).

The server takes a certificate chain and its key (`serve --tls-cert --tls-key`); clients verify
it against the system's trust store, or against one CA file (`--ca-file`, `$SPIRL_CA_FILE`, the
provider's `ca_file`) when the control plane's certificate comes from a private CA. With a CA
file only that CA is trusted.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "CA_FILE_ENV",
    "TlsConfigError",
    "client_verify",
    "is_loopback_host",
    "plain_http_warning",
    "server_context",
    "verification_failure",
]

CA_FILE_ENV = "SPIRL_CA_FILE"


class TlsConfigError(ValueError):
    """A certificate, key or CA file that cannot be used; the message says which and why."""


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.strerror or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS 1.2+ server context for HTTP/1.1 with the certificate chain in `cert_file`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    for path, flag in ((cert_file, "--tls-cert"), (key_file, "--tls-key")):
        if not path.is_file():
            raise TlsConfigError(f"{flag} {path}: no such file")
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(
            f"cannot use --tls-cert {cert_file} with --tls-key {key_file}: {_reason(exc)} "
            "(both must be PEM, the key unencrypted and matching the first certificate)"
        ) from exc
    return context


def client_verify(ca_file: str | Path | None = None) -> ssl.SSLContext | bool:
    """What to give httpx as `verify=`: a context trusting only `ca_file`, or the default
    trust store (True) when no CA file is set here or in $SPIRL_CA_FILE."""
    ca_file = ca_file or os.environ.get(CA_FILE_ENV) or None
    if ca_file is None:
        return True
    path = Path(ca_file)
    if not path.is_file():
        raise TlsConfigError(f"CA file {path}: no such file")
    try:
        return ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TlsConfigError(
            f"CA file {path} holds no usable PEM certificate: {_reason(exc)}"
        ) from exc


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_warning(url: str, what: str) -> str | None:
    """A warning when `url` is plain HTTP to a host other than this one, else None."""
    parts = urlsplit(url)
    if parts.scheme != "http" or is_loopback_host(parts.hostname or ""):
        return None
    return (
        f"{url} is plain HTTP: {what} travel in clear to another host; "
        "serve the control plane with --tls-cert/--tls-key and use an https:// URL"
    )


def verification_failure(exc: BaseException) -> str | None:
    """Why the server's certificate was refused, when that is what `exc` comes from."""
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return str(current.verify_message or current.reason or current)
        current = current.__cause__ or current.__context__
    return None
