"""SVID issuance: JWT-SVIDs and X.509-SVIDs signed through the key manager holding the
current key. Validation failures raise IssuanceError with a reason a caller can act on."""

from __future__ import annotations

import functools
import logging
import time
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controlplane.keymanagers.base import KeyManagerError, SigningAlgorithm

from .clock import Clock
from .crypto import LEAF_KEY_USAGE, sign_certificate, sign_jwt
from .keyring import KeyKind, KeyRecord, Keyring, ManagerHandle, NoActiveKeyError, svid_ttl_cap
from .metrics import Metrics

__all__ = [
    "IssuanceError",
    "Issuer",
    "SignerNotLocal",
    "chain_pem",
    "normalize_path_prefix",
    "validate_spiffe_id",
]

log = logging.getLogger(__name__)

DEFAULT_JWT_TTL = timedelta(minutes=5)
DEFAULT_X509_TTL = timedelta(hours=1)
_BACKDATE = timedelta(seconds=10)
_MAX_CACHED_ID = 512
_SEGMENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


class IssuanceError(Exception):
    """A request that cannot be served. `status` is the HTTP status to answer with."""

    def __init__(self, reason: str, status: int = 400, code: str = "bad_request") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.code = code


class SignerNotLocal(Exception):
    """Raised by ``issue_*(local_only=True)`` before any work that could block: the current
    key's manager signs over the network, so the caller should retry in a worker thread."""


def signs_locally(handle: ManagerHandle) -> bool:
    """True when the manager signs in process (CPU only, no I/O that can stall for long).

    Opt-in through a ``signs_locally = True`` attribute on the manager (the default key
    manager has it), so an unknown manager is treated as a network one.
    """
    return getattr(handle.instance, "signs_locally", False) is True


def validate_spiffe_id(spiffe_id: str, trust_domain: str) -> None:
    """A workload SPIFFE ID in `trust_domain` (SPIFFE ID spec: lowercase scheme and domain,
    non-empty path, no query/fragment/port/userinfo, no dot segments)."""
    if not isinstance(spiffe_id, str) or not spiffe_id.startswith("spiffe://"):
        raise IssuanceError(f"spiffe_id {spiffe_id!r} must start with spiffe://")
    if len(spiffe_id) > _MAX_CACHED_ID:
        _check_spiffe_id.__wrapped__(spiffe_id, trust_domain)
        return
    # Workloads ask again and again for the same ids: remember the valid ones (an
    # invalid id raises, and lru_cache keeps no result for it). Long ids are not cached,
    # so the cache stays small whatever clients send.
    _check_spiffe_id(spiffe_id, trust_domain)


@functools.lru_cache(maxsize=4096)
def _check_spiffe_id(spiffe_id: str, trust_domain: str) -> None:
    if "?" in spiffe_id or "#" in spiffe_id:
        raise IssuanceError("spiffe_id may not have a query or fragment")
    # On the raw string: urlsplit silently drops tabs and line breaks, and the raw string is
    # what gets signed.
    stray = next((c for c in spiffe_id if c not in _SEGMENT_CHARS and c not in "/:"), None)
    if stray is not None:
        raise IssuanceError(
            f"spiffe_id may only contain [a-zA-Z0-9.-_], '/' and the scheme's ':' "
            f"(found U+{ord(stray):04X})"
        )
    parts = urlsplit(spiffe_id)
    if parts.netloc != trust_domain:
        raise IssuanceError(
            f"spiffe_id {spiffe_id!r} is not in this server's trust domain {trust_domain!r}"
        )
    path = parts.path
    if not path or path == "/":
        raise IssuanceError("spiffe_id needs a workload path (spiffe://<trust domain>/<path>)")
    if path.endswith("/"):
        raise IssuanceError("spiffe_id path may not end with '/'")
    for segment in path[1:].split("/"):
        if segment in ("", ".", ".."):
            raise IssuanceError("spiffe_id path has an empty or dot segment")
        if not set(segment) <= _SEGMENT_CHARS:
            raise IssuanceError("spiffe_id path may only contain [a-zA-Z0-9.-_] and '/'")


def normalize_path_prefix(prefix: str, trust_domain: str) -> str:
    """A SPIFFE ID path prefix (`/ns/prod`) checked like a workload path; raises IssuanceError."""
    prefix = "/" + prefix.strip("/")
    validate_spiffe_id(f"spiffe://{trust_domain}{prefix}", trust_domain)
    return prefix


class Issuer:
    """Signs SVIDs for SPIFFE IDs of its trust domain; with `allowed_path_prefixes`, only for IDs
    whose path is one of them or lies below one (whole segments: `/ns/prod` allows
    `/ns/prod/web`, not `/ns/production`)."""

    def __init__(
        self,
        keyring: Keyring,
        clock: Clock,
        metrics: Metrics | None = None,
        allowed_path_prefixes: tuple[str, ...] = (),
    ) -> None:
        self._keyring = keyring
        self._clock = clock
        self._metrics = metrics or Metrics()
        self.allowed_path_prefixes = allowed_path_prefixes

    def _check_id(self, spiffe_id: str) -> None:
        validate_spiffe_id(spiffe_id, self.trust_domain)
        if not self.allowed_path_prefixes:
            return
        path = spiffe_id[len("spiffe://") + len(self.trust_domain) :]
        if not any(path == p or path.startswith(p + "/") for p in self.allowed_path_prefixes):
            raise IssuanceError(
                f"spiffe_id {spiffe_id!r} is outside the path prefixes this server issues for "
                f"({', '.join(self.allowed_path_prefixes)})",
                status=403,
                code="forbidden",
            )

    @property
    def trust_domain(self) -> str:
        return self._keyring.trust_domain

    def _signer(
        self, kind: KeyKind, now: datetime, local_only: bool
    ) -> tuple[KeyRecord, ManagerHandle]:
        try:
            rec, handle = self._keyring.signer_for(kind, now)
        except NoActiveKeyError as exc:
            raise IssuanceError(str(exc), status=503, code="unavailable") from exc
        if local_only and not signs_locally(handle):
            raise SignerNotLocal(handle.type)
        return rec, handle

    def _require_local(self, kind: KeyKind) -> None:
        """Raise SignerNotLocal before costly checks (a CSR's signature) that a retry in a
        worker thread would repeat. No key at all is left for the real lookup to report."""
        try:
            _, handle = self._keyring.signer_for(kind, self._clock.now())
        except NoActiveKeyError:
            return
        if not signs_locally(handle):
            raise SignerNotLocal(handle.type)

    def _sign(self, handle: ManagerHandle, kid: str, digest: bytes, alg: SigningAlgorithm) -> bytes:
        start = time.perf_counter()
        try:
            return handle.instance.sign_digest(kid, digest, alg)
        except KeyManagerError as exc:
            raise IssuanceError(
                f"key manager {handle.type} could not sign: {exc}", status=503, code="unavailable"
            ) from exc
        finally:
            self._metrics.sign_latency(handle.type, time.perf_counter() - start)

    def _ttl(self, requested: timedelta | None, default: timedelta, rec: KeyRecord) -> timedelta:
        cap = svid_ttl_cap(rec.lifetime)
        if requested is None:
            return min(default, cap)
        if requested <= timedelta(0):
            raise IssuanceError("ttl must be positive")
        if requested > cap:
            raise IssuanceError(
                f"ttl {requested} exceeds the maximum {cap} (min(key lifetime/6, 7d))"
            )
        return requested

    def _count(self, svid_type: str, exc: IssuanceError | None) -> None:
        if exc is None:
            self._metrics.issuance(svid_type)
        else:
            self._metrics.failure(svid_type, exc.code)

    def issue_jwt(
        self,
        spiffe_id: str,
        audience: list[str],
        ttl: timedelta | None = None,
        *,
        local_only: bool = False,
    ) -> str:
        """A signed JWT-SVID. With `local_only`, raise SignerNotLocal (nothing counted, nothing
        signed) when the current key's manager is a network one."""
        try:
            token = self._issue_jwt(spiffe_id, audience, ttl, local_only)
        except IssuanceError as exc:
            self._count("jwt", exc)
            raise
        self._count("jwt", None)
        return token

    def _issue_jwt(
        self, spiffe_id: str, audience: list[str], ttl: timedelta | None, local_only: bool
    ) -> str:
        self._check_id(spiffe_id)
        if (
            not isinstance(audience, list)
            or not audience
            or not all(isinstance(a, str) and a for a in audience)
        ):
            raise IssuanceError("audience must be a non-empty list of non-empty strings")
        now = self._clock.now()  # one reading for the key choice and the claims
        rec, handle = self._signer(KeyKind.JWT, now, local_only)
        lifetime = self._ttl(ttl, DEFAULT_JWT_TTL, rec)
        exp = min(now + lifetime, rec.not_after)
        claims = {
            "sub": spiffe_id,
            "aud": audience,
            "exp": int(exp.timestamp()),
            "iat": int(now.timestamp()),
        }
        return sign_jwt(
            rec.kid, claims, rec.key_type, lambda d, a: self._sign(handle, rec.key_id, d, a)
        )

    def issue_x509(
        self,
        spiffe_id: str,
        csr_pem: str | bytes,
        ttl: timedelta | None = None,
        *,
        local_only: bool = False,
    ) -> list[x509.Certificate]:
        """Leaf first, then the CA certificate that signed it. `local_only` as for issue_jwt."""
        try:
            chain = self._issue_x509(spiffe_id, csr_pem, ttl, local_only)
        except IssuanceError as exc:
            self._count("x509", exc)
            raise
        self._count("x509", None)
        return chain

    def _issue_x509(
        self, spiffe_id: str, csr_pem: str | bytes, ttl: timedelta | None, local_only: bool
    ) -> list[x509.Certificate]:
        if local_only:
            self._require_local(KeyKind.X509_CA)
        self._check_id(spiffe_id)
        csr = _load_csr(csr_pem)
        _check_csr_uris(csr, spiffe_id)
        now = self._clock.now()
        rec, handle = self._signer(KeyKind.X509_CA, now, local_only)
        assert rec.ca_cert_der is not None
        ca_cert = x509.load_der_x509_certificate(rec.ca_cert_der)
        lifetime = self._ttl(ttl, DEFAULT_X509_TTL, rec)
        not_after = min(now + lifetime, rec.not_after)
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE"),
                    ]
                )
            )
            .issuer_name(ca_cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(LEAF_KEY_USAGE, critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                critical=False,
            )
        )
        try:
            builder = builder.add_extension(
                x509.SubjectKeyIdentifier.from_public_key(csr.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        except (TypeError, ValueError) as exc:
            raise IssuanceError(f"unsupported CSR public key: {exc}") from exc
        leaf = sign_certificate(
            builder, rec.key_type, lambda d, a: self._sign(handle, rec.key_id, d, a)
        )
        return [leaf, ca_cert]


def _load_csr(csr_pem: str | bytes) -> x509.CertificateSigningRequest:
    data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    try:
        csr = x509.load_pem_x509_csr(data)
    except (ValueError, TypeError) as exc:
        raise IssuanceError(f"csr is not a PEM certificate signing request: {exc}") from exc
    try:
        valid = csr.is_signature_valid
    except Exception as exc:  # unsupported algorithms raise from deep inside cryptography
        raise IssuanceError(f"csr signature cannot be checked: {exc}") from exc
    if not valid:
        raise IssuanceError("csr signature is invalid (proof of possession failed)")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise IssuanceError("csr key must be EC or RSA")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise IssuanceError("csr RSA key must be at least 2048 bits")
    return csr


def _check_csr_uris(csr: x509.CertificateSigningRequest, spiffe_id: str) -> None:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if any(uri != spiffe_id for uri in uris):
        raise IssuanceError(f"csr asks for URI SANs {uris} but the request is for {spiffe_id}")


def chain_pem(chain: list[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain)
