"""The Azure Key Vault key manager: signing keys are HSM keys in a Premium tier vault.

Built from the KeyManager section's ``spec.extensions.azureKeyVault``::

    azureKeyVault:
      vaultURL: "https://my-vault.vault.azure.net/"   # required, https
      keyTags: {team: identity}                        # optional user tags
      keyType: ec-p256                                 # the type the server asks for
      sharedKeys:                                      # optional, see below
        keyNameTemplate: 'spire-{{ .TrustDomain | sha256sum | trunc 8 }}-{{ .KeyID }}'
        keyIdExtractionRegex: '^spire-[0-9a-f]{8}-(.+)$'
      credentials: {workloadIdentity: {}}              # default; or managedIdentity / clientSecret

Keys are created as EC-HSM (P-256, P-384) or RSA-HSM (2048, 4096) and sign remotely:
the private key never leaves Key Vault. EC signatures come back as r||s and are
returned as DER. Every key is tagged ``spire-server-td`` (the trust domain as written),
``spire-server-id``, ``spire-key-id`` plus the user's ``keyTags``.

Naming. Standard mode: one Key Vault key per (trust domain, server, key id), named
``spire-key-<32 hex of sha256(td, server, key id)>-<sanitised key id>``, so a restarted
server finds its keys without a listing; the server asks for a fresh key id at every rotation,
so every generation is a key of its own, deleted once it is released (as SPIRE's plugin names
each generation anew and deletes the key a slot replaces). Key Vault compares names
case-insensitively, and so does this manager. Shared keys mode: the name comes from
``keyNameTemplate``; a key that another server created less than 15 minutes ago is reused
instead of adding a duplicate version. Two servers that both found nothing fresh and created a
version at the same moment converge: both use the oldest version of that burst (versions created
within 15 minutes of the newest one; ties on the one-second ``created`` broken by preferring
another server's version over one's own newest, then by version id: never by listing order,
which Key Vault does not define), so they still share one key, and a restarted server picks the
same version by the same rule. ``shares_keys`` tells the trust domain server to ask for the
stable JWT key ids ``SHARED_JWT_KEY_IDS`` in this mode.

Lifecycle (the caller drives it; see trust_domain_server/keyring.py and housekeeping.py):

- ``release_key(key_id)`` once a key no longer signs and its public key is no longer needed
  (it expired): the key is deleted (soft delete). A shared key's name is never deleted (other
  servers use it): its versions older than its newest two generations are disabled.
- ``refresh_own_keys(in_use)`` every 6 h bumps ``updated`` of exactly the keys in use (one
  PATCH each, as SPIRE's plugin), so other servers' cleanup sees them alive.
- ``delete_orphaned_keys(keep, created_before)`` every 48 h deletes keys this server made but
  no longer knows (a crash between creating a key and recording it; lost state) and left-over
  probe keys, and purges its soft-deleted keys when the vault allows it (best effort: purge
  protection or a missing purge permission leave them to the vault's retention period; an HSM
  key is billed for 30 days after its last use either way, per the soft-delete overview).
- ``delete_stale_keys(protected)`` every 48 h deletes (soft delete) keys of the same trust
  domain made by other servers and not updated for 14 days, never one named in ``protected``.
  The trust domain comparison uses the raw tag and the raw trust domain, so dotted domains
  (``example.org``) work.

Throttling: 429 and 503 answers are retried with exponential back-off and jitter (1, 2, 4, 8,
16 s; Retry-After when given) within the operation's deadline (azure_retry.py); what still
fails is a TransientKeyManagerError. Errors name their real cause (azure_errors.py).
"""

from __future__ import annotations

import hashlib
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.keyvault.keys import KeyClient, KeyProperties, KeyVaultKey
from azure.keyvault.keys import KeyType as AzureKeyType
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from controlplane.documents import (
    TemplateError,
    is_valid_key_vault_key_name,
    render_key_name_template,
    sanitize_key_vault_name,
)
from controlplane.keymanagers.azure_config import (
    AzureKeyVaultConfig,
    build_credential,
    parse_config,
)
from controlplane.keymanagers.azure_errors import (
    DeletedButRecoverableError,
    FirewallDeniedError,
    PermissionDeniedError,
    PurgeProtectedError,
    SoftDeleteConflictError,
    map_azure_error,
    retry_after_seconds,
)
from controlplane.keymanagers.azure_retry import Backoff
from controlplane.keymanagers.base import (
    SHARED_JWT_KEY_IDS,
    HashAlgorithm,
    KeyManagerError,
    KeyNotFoundError,
    KeyType,
    PublicKey,
    SigningAlgorithm,
)
from controlplane.keymanagers.signatures import check_digest_length, ecdsa_raw_to_der
from controlplane.keymanagers.validation import coerce_key_type, require_key_id

__all__ = [
    "CLEANUP_INTERVAL",
    "REFRESH_INTERVAL",
    "SHARED_KEY_FRESHNESS",
    "STALE_KEY_AGE",
    "TAG_KEY_ID",
    "TAG_SERVER_ID",
    "TAG_TRUST_DOMAIN",
    "AzureKeyVaultKeyManager",
]

log = logging.getLogger(__name__)

TAG_TRUST_DOMAIN = "spire-server-td"
TAG_SERVER_ID = "spire-server-id"
TAG_KEY_ID = "spire-key-id"
TAG_PROBE = "spire-probe"

REFRESH_INTERVAL = timedelta(hours=6)
CLEANUP_INTERVAL = timedelta(hours=48)
STALE_KEY_AGE = timedelta(days=14)
SHARED_KEY_FRESHNESS = timedelta(minutes=15)
PROBE_LIFETIME = timedelta(minutes=10)
# Generations of a shared key name kept enabled: the one in use and the one before it.
SHARED_GENERATIONS_KEPT = 2
# Seconds of back-off one call may spend: a sign holds an SVID request; anything else is
# housekeeping or a rotation step the rotator retries later anyway.
SIGN_DEADLINE = 30.0
DEADLINE = 60.0
# How long an asynchronous delete or recovery is waited for before giving up for now.
SOFT_DELETE_WAIT = 30.0

# Public Key Vault DNS suffixes (public, China, US Gov clouds; Managed HSM). For these the
# SDK's check that the auth challenge names the vault's own domain stays on; any other host
# (a private endpoint alias, the loopback emulator) cannot pass that check, so it is off.
_AZURE_VAULT_SUFFIXES = (
    ".vault.azure.net",
    ".vault.azure.cn",
    ".vault.usgovcloudapi.net",
    ".managedhsm.azure.net",
)

_HSM_SPECS: dict[KeyType, dict[str, Any]] = {
    KeyType.EC_P256: {"key_type": AzureKeyType.ec_hsm, "curve": "P-256"},
    KeyType.EC_P384: {"key_type": AzureKeyType.ec_hsm, "curve": "P-384"},
    KeyType.RSA_2048: {"key_type": AzureKeyType.rsa_hsm, "size": 2048},
    KeyType.RSA_4096: {"key_type": AzureKeyType.rsa_hsm, "size": 4096},
}
_EC_ALGORITHMS = {
    (KeyType.EC_P256, HashAlgorithm.SHA256): "ES256",
    (KeyType.EC_P384, HashAlgorithm.SHA384): "ES384",
}
_CURVES: dict[str, tuple[ec.EllipticCurve, KeyType]] = {
    "P-256": (ec.SECP256R1(), KeyType.EC_P256),
    "P-384": (ec.SECP384R1(), KeyType.EC_P384),
}

T = TypeVar("T")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _enum_text(value: Any) -> str:
    return str(getattr(value, "value", value))


def _public_key_of(key: KeyVaultKey) -> tuple[KeyType, bytes]:
    """Contract key type and DER SubjectPublicKeyInfo of a Key Vault key."""
    jwk: Any = key.key  # JsonWebKey sets its fields dynamically
    kty = _enum_text(jwk.kty)
    if not kty.endswith("-HSM"):
        raise KeyManagerError(
            f"Key Vault key {key.id} is {kty}, not HSM-backed; this key manager only uses HSM keys"
        )
    public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey
    if kty == "EC-HSM":
        curve = _CURVES.get(_enum_text(jwk.crv))
        if curve is None or jwk.x is None or jwk.y is None:
            raise KeyManagerError(f"Key Vault key {key.id} has an unsupported curve {jwk.crv}")
        public = ec.EllipticCurvePublicNumbers(
            int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big"), curve[0]
        ).public_key()
        key_type = curve[1]
    else:
        if jwk.n is None or jwk.e is None:
            raise KeyManagerError(f"Key Vault key {key.id} has no RSA modulus")
        public = rsa.RSAPublicNumbers(
            int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big")
        ).public_key()
        sizes = {2048: KeyType.RSA_2048, 4096: KeyType.RSA_4096}
        if public.key_size not in sizes:
            raise KeyManagerError(f"Key Vault key {key.id} has an unsupported RSA size")
        key_type = sizes[public.key_size]
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key_type, der


@dataclass(frozen=True)
class _Entry:
    """A resolved key: its Key Vault name, the versioned key, and the contract's view."""

    name: str
    key: KeyVaultKey
    public: PublicKey


class AzureKeyVaultKeyManager:
    """KeyManager on Azure Key Vault HSM keys. See the module docstring."""

    type_name = "azureKeyVault"

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        trust_domain: str,
        server_id: str,
        clock: Callable[[], datetime] = _utc_now,
        credential: Any = None,
        connection_verify: str | bool | None = None,
        authority_host: str | None = None,
        deadline: float = DEADLINE,
        sign_deadline: float = SIGN_DEADLINE,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not trust_domain:
            raise KeyManagerError("azureKeyVault needs the server's trust domain")
        if not server_id:
            raise KeyManagerError("azureKeyVault needs a server id (key identifier)")
        self.config: AzureKeyVaultConfig = parse_config(config)
        self.trust_domain = trust_domain
        self.server_id = server_id
        self.key_type = self.config.key_type  # what the server should ask for
        self._clock = clock
        self._deadline = deadline
        self._sign_deadline = sign_deadline
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._vault = self.config.vault_url
        self._owns_credential = credential is None
        self._credential = credential or build_credential(
            self.config.credentials, connection_verify, authority_host
        )
        host = (urlsplit(self._vault).hostname or "").lower()
        self._client_kwargs: dict[str, Any] = {
            "verify_challenge_resource": host.endswith(_AZURE_VAULT_SUFFIXES),
            # Status retries are ours (see _call); the SDK still retries connection errors a
            # few times.
            "retry_status": 0,
            "retry_total": 3,
            "retry_backoff_factor": 0.2,
        }
        if connection_verify is not None:
            self._client_kwargs["connection_verify"] = connection_verify
        self._keys = KeyClient(self._vault, self._credential, **self._client_kwargs)
        self._lock = threading.Lock()
        self._cache: dict[str, _Entry] = {}
        self._crypto: dict[str, CryptographyClient] = {}
        self._purge_allowed = True  # False once the vault refused a purge for good
        self._closed = False

    @property
    def shares_keys(self) -> bool:
        """True in shared keys mode: servers of a deployment share JWT keys by key id."""
        return self.config.shared_keys is not None

    def _is_shared(self, key_id: str) -> bool:
        """A key other servers may use too: a JWT signer slot id in shared keys mode (X.509
        CA keys are never shared, as in SPIRE's plugin)."""
        return self.shares_keys and key_id in SHARED_JWT_KEY_IDS

    # -- plumbing ----------------------------------------------------------------------------

    def _call(self, operation: str, subject: str, fn: Callable[[], T]) -> T:
        """Run one SDK call; back off on 429/503 within the deadline (azure_retry); map errors."""
        if self._closed:
            raise KeyManagerError("the Azure Key Vault key manager is closed")
        backoff: Backoff | None = None  # made on the first 429/503: the common path is lean
        while True:
            try:
                return fn()
            except HttpResponseError as exc:
                wait = None
                if exc.status_code in (429, 503):
                    if backoff is None:
                        deadline = self._sign_deadline if operation == "sign" else self._deadline
                        backoff = Backoff(deadline, rng=self._rng)
                    wait = backoff.next_wait(retry_after_seconds(exc))
                if wait is None or backoff is None:
                    raise map_azure_error(exc, operation, self._vault, subject) from exc
                log.warning(
                    "Key Vault %s answered %s to %s %s; retrying in %.1fs (retry %d, %.0fs of "
                    "%.0fs back-off used)",
                    self._vault,
                    exc.status_code,
                    operation,
                    subject,
                    wait,
                    backoff.attempt,
                    backoff.waited,
                    backoff.deadline,
                )
                self._sleep(wait)
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise map_azure_error(exc, operation, self._vault, subject) from exc

    def _tags_for(self, key_id: str) -> dict[str, str]:
        return {
            **self.config.key_tags,
            TAG_TRUST_DOMAIN: self.trust_domain,
            TAG_SERVER_ID: self.server_id,
            TAG_KEY_ID: key_id,
        }

    def key_name(self, key_id: str) -> str:
        """The Key Vault key name that holds `key_id` for this server."""
        shared = self.config.shared_keys
        if shared is None:
            digest = hashlib.sha256(
                f"{self.trust_domain}\n{self.server_id}\n{key_id}".encode()
            ).hexdigest()[:32]
            readable = sanitize_key_vault_name(key_id)[:70].strip("-")
            return f"spire-key-{digest}-{readable}" if readable else f"spire-key-{digest}"
        try:
            name = render_key_name_template(
                shared.key_name_template,
                trust_domain=self.trust_domain,
                server_id=self.server_id,
                key_id=key_id,
            )
        except TemplateError as exc:
            raise KeyManagerError(f"azureKeyVault.sharedKeys.keyNameTemplate: {exc}") from exc
        if not is_valid_key_vault_key_name(name):
            raise KeyManagerError(
                f"azureKeyVault.sharedKeys.keyNameTemplate renders {name[:140]!r} for key id "
                f"{key_id!r}: not a valid Key Vault key name ([0-9a-zA-Z-], 1 to 127 characters)"
            )
        match = shared.key_id_regex.search(name)
        if match is None or match.group(1) != key_id:
            got = None if match is None else match.group(1)
            raise KeyManagerError(
                f"azureKeyVault.sharedKeys.keyIdExtractionRegex recovers {got!r} from key name "
                f"{name!r}, not the key id {key_id!r}; the capture group must match exactly "
                "the key id part of the name"
            )
        return name

    def _key_id_of(self, props: KeyProperties) -> str | None:
        """The key id a listed key holds for this server, or None if it is not ours."""
        tags = props.tags or {}
        if tags.get(TAG_TRUST_DOMAIN) != self.trust_domain or TAG_PROBE in tags:
            return None
        shared = self.config.shared_keys
        if shared is None:
            if tags.get(TAG_SERVER_ID) != self.server_id:
                return None
            key_id = tags.get(TAG_KEY_ID)
            return key_id if key_id and _same_name(props.name, self.key_name(key_id)) else None
        match = shared.key_id_regex.search(props.name or "")
        return match.group(1) if match and match.group(1) else None

    def _entry(self, name: str, key: KeyVaultKey, key_id: str) -> _Entry:
        key_type, der = _public_key_of(key)
        public = PublicKey(
            key_id=key_id, key_type=key_type, public_key_der=der, provider_ref=key.id or ""
        )
        return _Entry(name=name, key=key, public=public)

    def _fetch(self, key_id: str) -> _Entry:
        name = self.key_name(key_id)
        key = self._call("get", name, lambda: self._keys.get_key(name))
        if self._is_shared(key_id):
            key = self._settle_shared(name, key)
        tags = key.properties.tags or {}
        if tags.get(TAG_TRUST_DOMAIN) != self.trust_domain or (
            self.config.shared_keys is None
            and (tags.get(TAG_SERVER_ID) != self.server_id or tags.get(TAG_KEY_ID) != key_id)
        ):
            raise KeyNotFoundError(
                f"Key Vault {self._vault}: key {name} is not this server's key for {key_id!r}"
            )
        entry = self._entry(name, key, key_id)
        with self._lock:
            self._cache[key_id] = entry
        log.info("using Key Vault key %s for key id %s", key.id, key_id)
        return entry

    def _settle_shared(
        self, name: str, latest: KeyVaultKey, *, latest_is_current: bool = True
    ) -> KeyVaultKey:
        """The version of shared key `name` that all servers use, given a version of it.

        A server adds a version only when the newest is more than 15 minutes old, so the
        versions of one rotation come in a burst, more than one only when servers raced
        (both found nothing fresh, both created). The burst is the versions created within
        15 minutes of the newest one; a server's newer version replaces its own older ones
        there (the contract: regenerating an id makes the old key unusable). The agreed
        version is the oldest of the burst. `created` has one-second resolution: within a tie
        the key's current version (what GET answers: the one made last, the only order Key
        Vault defines) is not chosen, since the server that made the first version may have
        seen only its own and kept it; the version id settles what is left. Listing order is
        never used (Key Vault does not define it). Every server, and a restarted one, applies
        this rule to the same versions, so they all sign with and publish one key.

        `latest_is_current`: `latest` came from a GET of the name (else it is the version
        this server just created, and the current version is asked for when it matters).
        """
        listed = self._call(
            "list",
            f"versions of {name}",
            lambda: list(self._keys.list_properties_of_key_versions(name)),
        )
        usable = [
            p
            for p in listed
            if p.created_on is not None
            and p.version
            and p.enabled is not False
            and (p.tags or {}).get(TAG_TRUST_DOMAIN) == self.trust_domain
        ]
        if not usable:
            return latest
        top = max(p.created_on for p in usable if p.created_on is not None)
        newest_by_creator: dict[str, KeyProperties] = {}
        for p in usable:
            assert p.created_on is not None
            if p.created_on < top - SHARED_KEY_FRESHNESS:
                continue
            creator = (p.tags or {}).get(TAG_SERVER_ID) or ""
            kept = newest_by_creator.get(creator)
            if kept is None or _recency(p, latest) > _recency(kept, latest):
                newest_by_creator[creator] = p
        burst = list(newest_by_creator.values())
        if len(burst) == 1:
            chosen_version = str(burst[0].version)
        else:
            current = latest
            if not latest_is_current:
                current = self._call("get", name, lambda: self._keys.get_key(name))
            current_version = current.properties.version
            first = min(
                burst,
                key=lambda p: (p.created_on, p.version == current_version, str(p.version)),
            )
            chosen_version = str(first.version)
            log.info(
                "Key Vault key %s got versions from %d servers in one rotation (they raced); "
                "using the first, version %s, as every server does",
                name,
                len(burst),
                chosen_version,
            )
        if chosen_version == latest.properties.version:
            return latest
        return self._call("get", name, lambda: self._keys.get_key(name, chosen_version))

    def _resolve(self, key_id: str) -> _Entry:
        with self._lock:
            entry = self._cache.get(key_id)
        return entry if entry is not None else self._fetch(key_id)

    def _crypto_client(self, key: KeyVaultKey) -> CryptographyClient:
        kid = key.id or ""
        with self._lock:
            client = self._crypto.get(kid)
            if client is None:
                # Given the key itself, the client needs no extra GET before signing.
                client = CryptographyClient(key, self._credential, **self._client_kwargs)
                self._crypto[kid] = client
            return client

    # -- KeyManager --------------------------------------------------------------------------

    def check(self) -> None:
        """Prove that this server can create HSM keys, sign, update and delete in the vault.

        Key Vault's data plane reveals neither the vault's tier nor the caller's role
        assignments, and RBAC is evaluated per call, so the only sound proof is to try:
        list keys (reachability, authentication, read), then create a probe key
        (Standard tier refuses HSM keys; needs create), touch its tags (update), sign with
        it (sign), delete it (delete) and purge it when allowed. The probe cannot become
        a usable signing key: it expires after 10 minutes, carries no ``spire-key-id``
        (no server ever lists or uses it) and is deleted right away, whatever failed.
        """
        if self.config.shared_keys is not None:
            for sample in (*SHARED_JWT_KEY_IDS, "x509-ca-0123456789ab"):
                self.key_name(sample)  # raises when template and regex disagree
        listed = self._call(
            "list",
            "",
            lambda: [
                p for p, _ in zip(self._keys.list_properties_of_keys(), range(25), strict=False)
            ],
        )
        probe = f"spire-probe-{secrets.token_hex(8)}"
        self._call(
            "create",
            f"(probe key {probe})",
            lambda: self._keys.create_key(
                probe,
                AzureKeyType.ec_hsm,
                curve="P-256",
                key_operations=["sign"],
                # On the server's clock (which tests move, with the vault's clock).
                expires_on=self._clock() + PROBE_LIFETIME,
                tags={
                    TAG_TRUST_DOMAIN: self.trust_domain,
                    TAG_SERVER_ID: self.server_id,
                    TAG_PROBE: "check",
                },
            ),
        )
        failure: KeyManagerError | None = None
        try:
            self._call(
                "update",
                f"(probe key {probe})",
                lambda: self._keys.update_key_properties(
                    probe,
                    tags={
                        TAG_TRUST_DOMAIN: self.trust_domain,
                        TAG_SERVER_ID: self.server_id,
                        TAG_PROBE: "checked",
                    },
                ),
            )
            key = self._call("get", f"(probe key {probe})", lambda: self._keys.get_key(probe))
            digest = hashlib.sha256(b"spirl key manager check").digest()
            crypto = CryptographyClient(key, self._credential, **self._client_kwargs)
            try:
                self._call(
                    "sign",
                    f"with probe key {probe}",
                    lambda: crypto.sign(SignatureAlgorithm.es256, digest),
                )
            finally:
                crypto.close()
        except KeyManagerError as exc:
            failure = exc
        finally:
            self._delete_probe(probe, failure)
        if failure is not None:
            raise failure
        own = [p.id for p in listed if self._key_id_of(p) is not None]
        log.info(
            "Key Vault %s checked (Premium tier, create/update/sign/delete allowed); "
            "keys of this server: %s",
            self._vault,
            ", ".join(str(k) for k in own) or "none yet",
        )

    def _delete_probe(self, probe: str, earlier: KeyManagerError | None) -> None:
        """Delete the probe, wait for the deletion and purge it, so it never lingers (unless
        the vault keeps deleted keys: purge protection, no purge permission)."""
        subject = f"(probe key {probe})"
        try:
            poller = self._delete(probe, subject)
        except KeyManagerError:
            if earlier is None:
                raise
            log.error("could not delete probe key %s (it expires by itself)", probe)
            return
        if poller is None or not _purgeable(poller):
            return
        poller.wait(timeout=SOFT_DELETE_WAIT)
        backoff = Backoff(SOFT_DELETE_WAIT, rng=self._rng)
        try:
            while not self._purge(probe, subject):
                wait = backoff.next_wait(None)
                if wait is None:
                    log.warning("probe key %s deleted, not purged yet (still being deleted)", probe)
                    return
                self._sleep(wait)
        except KeyManagerError as exc:  # a purge is a nicety: a deleted probe cannot sign
            log.warning("probe key %s deleted, not purged: %s", probe, exc)

    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        key_id = require_key_id(key_id)
        key_type = coerce_key_type(key_type)
        name = self.key_name(key_id)
        if self._is_shared(key_id):
            reused = self._fresh_shared_key(name, key_id, key_type)
            if reused is not None:
                return reused.public
        spec = _HSM_SPECS[key_type]
        tags = self._tags_for(key_id)

        def create() -> KeyVaultKey:
            return self._keys.create_key(name, key_operations=["sign", "verify"], tags=tags, **spec)

        key = self._create_version(name, create)
        log.info("created Key Vault key %s (%s) for key id %s", key.id, key_type.value, key_id)
        if self._is_shared(key_id):
            key = self._settle_shared(name, key, latest_is_current=False)
        entry = self._entry(name, key, key_id)
        if entry.public.key_type is not key_type:
            raise KeyManagerError(
                f"shared Key Vault key {key.id} is {entry.public.key_type.value}, not "
                f"{key_type.value}; servers sharing keys must use the same keyType"
            )
        with self._lock:
            self._cache[key_id] = entry
        return entry.public

    def _create_version(self, name: str, create: Callable[[], KeyVaultKey]) -> KeyVaultKey:
        """Create a version of `name`. A name held by a soft-deleted key (and only then:
        ObjectIsDeletedButRecoverable) is recovered first; a delete or recovery still running
        (ObjectIsBeingDeleted, ObjectIsBeingRecovered, parallel recoveries) is waited out."""
        backoff = Backoff(SOFT_DELETE_WAIT, rng=self._rng)
        while True:
            try:
                return self._call("create", name, create)
            except DeletedButRecoverableError:
                # E.g. removed by another server's stale-key cleanup: bring the name back,
                # then add the new version on top.
                log.warning(
                    "Key Vault key %s is soft-deleted; recovering it to reuse the name", name
                )
                self._recover(name)
            except SoftDeleteConflictError as exc:
                wait = backoff.next_wait(None)
                if wait is None:
                    raise
                log.info("%s; retrying in %.1fs", exc, wait)
                self._sleep(wait)

    def _recover(self, name: str) -> None:
        try:
            poller = self._call(
                "recover",
                name,
                lambda: self._keys.begin_recover_deleted_key(name, _polling_interval=0.5),  # type: ignore[call-arg]
            )
        except (SoftDeleteConflictError, KeyNotFoundError):
            return  # another server is recovering it, or it is back: try creating again
        poller.wait(timeout=SOFT_DELETE_WAIT)

    def _fresh_shared_key(self, name: str, key_id: str, key_type: KeyType) -> _Entry | None:
        """A key another server created under `name` within 15 minutes, to reuse."""
        try:
            key = self._call("get", name, lambda: self._keys.get_key(name))
        except KeyNotFoundError:
            return None
        tags = key.properties.tags or {}
        created = key.properties.created_on
        if (
            tags.get(TAG_TRUST_DOMAIN) != self.trust_domain
            or tags.get(TAG_SERVER_ID) == self.server_id  # our own: regenerate means replace
            or created is None
            or self._clock() - created > SHARED_KEY_FRESHNESS
        ):
            return None
        key = self._settle_shared(name, key)
        entry = self._entry(name, key, key_id)
        if entry.public.key_type is not key_type:
            return None
        with self._lock:
            self._cache[key_id] = entry
        log.info(
            "reusing Key Vault key %s created by server %s at %s for key id %s",
            key.id,
            tags.get(TAG_SERVER_ID),
            created.isoformat(),
            key_id,
        )
        return entry

    def get_public_key(self, key_id: str) -> PublicKey:
        return self._resolve(require_key_id(key_id)).public

    def list_public_keys(self) -> list[PublicKey]:
        listed = self._call("list", "", lambda: list(self._keys.list_properties_of_keys()))
        out: list[PublicKey] = []
        seen: set[str] = set()
        for props in listed:
            key_id = self._key_id_of(props)
            if key_id is None or key_id in seen or props.enabled is False:
                continue
            seen.add(key_id)
            with self._lock:
                cached = self._cache.get(key_id)
            if cached is not None and _same_name(cached.name, props.name):
                out.append(cached.public)
                continue
            try:
                out.append(self._fetch(key_id).public)
            except KeyNotFoundError:
                continue  # deleted between the listing and the read
        return out

    def sign_digest(self, key_id: str, digest: bytes, algorithm: SigningAlgorithm) -> bytes:
        entry = self._resolve(require_key_id(key_id))
        key_type = entry.public.key_type
        try:
            check_digest_length(digest, algorithm.hash)
        except ValueError as exc:
            raise KeyManagerError(f"cannot sign with {key_id}: {exc}") from exc
        if key_type.is_ec:
            alg = _EC_ALGORITHMS.get((key_type, algorithm.hash))
            if alg is None:
                raise KeyManagerError(
                    f"key {key_id} ({key_type.value}) cannot sign a {algorithm.hash.value} digest"
                )
        else:
            alg = ("PS" if algorithm.rsa_pss else "RS") + algorithm.hash.value.removeprefix("sha")
        crypto = self._crypto_client(entry.key)
        result = self._call(
            "sign", entry.name, lambda: crypto.sign(SignatureAlgorithm(alg), digest)
        )
        signature = bytes(result.signature)
        return ecdsa_raw_to_der(signature, key_type) if key_type.is_ec else signature

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            clients = list(self._crypto.values())
            self._crypto.clear()
        for client in clients:
            client.close()
        self._keys.close()
        if self._owns_credential and hasattr(self._credential, "close"):
            self._credential.close()

    # -- lifecycle and housekeeping ----------------------------------------------------------

    def _delete(self, name: str, subject: str) -> Any:
        """Soft-delete `name` without waiting; the SDK's delete poller, or None if it was
        gone already."""
        try:
            return self._call(
                "delete",
                subject,
                lambda: self._keys.begin_delete_key(name, _polling_interval=0.5),  # type: ignore[call-arg]
            )
        except KeyNotFoundError:
            return None

    def _purge(self, name: str, subject: str) -> bool:
        """Purge a deleted key, best effort. True when nothing is left to do (purged, already
        gone, or the vault does not let this server purge); False while it is being deleted."""
        if not self._purge_allowed:
            return True
        try:
            self._call("purge", subject, lambda: self._keys.purge_deleted_key(name))
        except SoftDeleteConflictError:
            return False
        except KeyNotFoundError:
            return True
        except PurgeProtectedError as exc:
            self._purge_allowed = False
            log.info("%s; deleted keys stay soft-deleted until then", exc)
            return True
        except PermissionDeniedError as exc:
            if isinstance(exc, FirewallDeniedError):
                raise
            self._purge_allowed = False
            log.warning(
                "the server's identity may not purge deleted keys, so they stay soft-deleted "
                "until the vault's retention period ends (grant the purge permission to purge "
                "them at once): %s",
                exc,
            )
            return True
        return True

    def _forget(self, key_id: str) -> None:
        with self._lock:
            entry = self._cache.pop(key_id, None)
            client = self._crypto.pop(entry.key.id or "", None) if entry else None
        if client is not None:
            client.close()

    def release_key(self, key_id: str) -> bool:
        """Remove a key that no longer signs and is no longer needed for verification.

        Not part of the KeyManager protocol; the trust domain server calls it once the key has
        expired (and again if it raised). A key of its own is deleted (soft delete: one call,
        as SPIRE's plugin deletes the key a slot replaces); ``delete_orphaned_keys`` purges it
        later, when the vault allows it. A shared key (``SHARED_JWT_KEY_IDS`` in shared keys
        mode) keeps its name, other servers sign with it: its versions older than its newest
        two generations are disabled. Returns True: nothing is left for the caller to do.
        """
        key_id = require_key_id(key_id)
        name = self.key_name(key_id)
        if self._is_shared(key_id):
            self._retire_shared_versions(name)
            return True
        self._forget(key_id)
        poller = self._delete(name, name)
        log.info(
            "released Key Vault key %s (key id %s): %s",
            name,
            key_id,
            "deleted" if poller is not None else "already gone",
        )
        return True

    def _retire_shared_versions(self, name: str) -> list[str]:
        """Disable the versions of shared key `name` older than its newest two generations
        (Key Vault cannot delete single versions). A generation is a burst of versions made
        within 15 minutes of each other (servers that raced); newest by `created`."""
        try:
            listed = self._call(
                "list",
                f"versions of {name}",
                lambda: list(self._keys.list_properties_of_key_versions(name)),
            )
        except KeyNotFoundError:
            return []
        epoch = datetime.min.replace(tzinfo=UTC)
        newest_first = sorted(
            listed, key=lambda p: (p.created_on or epoch, str(p.version)), reverse=True
        )
        generations = 0
        burst_start: datetime | None = None
        disabled: list[str] = []
        for props in newest_first:
            created = props.created_on or epoch
            if burst_start is None or created < burst_start - SHARED_KEY_FRESHNESS:
                generations += 1
                burst_start = created
            if generations <= SHARED_GENERATIONS_KEPT or props.enabled is False:
                continue
            version = str(props.version)
            self._call(
                "update",
                f"{name} version {version}",
                lambda version=version: self._keys.update_key_properties(  # type: ignore[misc]
                    name, version, enabled=False
                ),
            )
            disabled.append(version)
        if disabled:
            log.info("disabled old versions of shared Key Vault key %s: %s", name, disabled)
        return disabled

    def refresh_own_keys(self, in_use_key_ids: Collection[str] = ()) -> list[str]:
        """Bump `updated` of the keys in use (call every REFRESH_INTERVAL); returns the names.

        Other servers' stale-key cleanup judges keys by `updated`; refreshing keeps ours. Only
        the keys named in `in_use_key_ids` (the key ids this server still signs or verifies
        with, shared ones included) are touched, with one PATCH each that rewrites their key
        operations unchanged (as SPIRE's plugin does), so tags stay as they are and keys no
        longer used age out.
        """
        refreshed: list[str] = []
        errors: list[KeyManagerError] = []
        for key_id in sorted(set(in_use_key_ids)):
            name = self.key_name(key_id)
            try:
                self._call(
                    "update",
                    name,
                    lambda name=name: self._keys.update_key_properties(  # type: ignore[misc]
                        name, key_operations=["sign", "verify"]
                    ),
                )
            except KeyNotFoundError:
                log.warning("Key Vault key %s (key id %s) in use but gone", name, key_id)
                continue
            except KeyManagerError as exc:
                log.error("could not refresh Key Vault key %s: %s", name, exc)
                errors.append(exc)
                continue
            refreshed.append(name)
        if errors:
            raise errors[0]
        log.info("refreshed %d Key Vault keys of server %s", len(refreshed), self.server_id)
        return refreshed

    def _own(self, props: KeyProperties) -> bool:
        tags = props.tags or {}
        return (
            tags.get(TAG_TRUST_DOMAIN) == self.trust_domain
            and tags.get(TAG_SERVER_ID) == self.server_id
        )

    def delete_orphaned_keys(
        self, keep_key_ids: Collection[str], created_before: datetime
    ) -> list[str]:
        """Delete keys this server made that it no longer knows; purge its deleted leftovers.

        Call every CLEANUP_INTERVAL with `keep_key_ids`, every key id the server holds (any
        key manager, keys awaiting release included), and `created_before`, a time before which
        every key of the server has expired. Such keys come from a crash between creating a
        key and recording it, or from lost state. Shared keys are never touched (other servers
        use them); a probe key only once it has expired. Then the server's own keys left
        soft-deleted (released, probes) are purged when the vault allows it. Returns the
        deleted names.
        """
        keep = set(keep_key_ids)
        now = self._clock()
        listed = self._call("list", "", lambda: list(self._keys.list_properties_of_keys()))
        deleted: list[str] = []
        for props in listed:
            tags = props.tags or {}
            name = props.name or ""
            if not name or not self._own(props):
                continue
            if TAG_PROBE in tags:
                if props.expires_on is None or props.expires_on > now:
                    continue  # a check may be using it
            else:
                key_id = tags.get(TAG_KEY_ID)
                if (
                    not key_id
                    or key_id in keep
                    or self._is_shared(key_id)
                    or props.created_on is None
                    or props.created_on >= created_before
                ):
                    continue
            try:
                self._delete(name, name)
            except KeyManagerError as exc:
                log.error("could not delete orphaned Key Vault key %s: %s", name, exc)
                continue
            deleted.append(name)
            log.info("deleted orphaned Key Vault key %s (created %s)", props.id, props.created_on)
        if self._purge_allowed:
            self._purge_leftovers(keep)
        return deleted

    def _purge_leftovers(self, keep: set[str]) -> None:
        leftovers = self._call("list", "deleted keys", lambda: list(self._keys.list_deleted_keys()))
        for item in leftovers:
            props = item.properties
            key_id = (props.tags or {}).get(TAG_KEY_ID)
            if (
                not item.name
                or not self._own(props)
                or key_id in keep
                or self._is_shared(str(key_id))
                or "purgeable" not in str(props.recovery_level or "purgeable").lower()
            ):
                continue
            self._purge(item.name, f"(deleted key {item.name})")  # still deleting: next time
            if not self._purge_allowed:
                return

    def delete_stale_keys(
        self, protected_key_names: Collection[str] = (), *, max_age: timedelta = STALE_KEY_AGE
    ) -> list[str]:
        """Soft-delete other servers' keys of this trust domain not updated for `max_age`.

        Call every CLEANUP_INTERVAL. `protected_key_names` holds Key Vault key names or key
        ids (``spire-key-id``) that may still verify an unexpired SVID: never deleted.
        Returns the deleted names.
        """
        protected = {p.lower() for p in protected_key_names}
        cutoff = self._clock() - max_age
        listed = self._call("list", "", lambda: list(self._keys.list_properties_of_keys()))
        deleted: list[str] = []
        for props in listed:
            tags = props.tags or {}
            name = props.name or ""
            if (
                tags.get(TAG_TRUST_DOMAIN) != self.trust_domain  # raw tag vs raw trust domain
                or tags.get(TAG_SERVER_ID) in (None, self.server_id)
                or name.lower() in protected
                or (tags.get(TAG_KEY_ID) or "").lower() in protected
                or props.updated_on is None
                or props.updated_on >= cutoff
            ):
                continue
            try:
                if self._delete(name, name) is None:
                    continue
            except KeyManagerError as exc:
                log.error("could not delete stale Key Vault key %s: %s", name, exc)
                continue
            deleted.append(name)
            log.info(
                "deleted stale Key Vault key %s of server %s (last updated %s)",
                props.id,
                tags.get(TAG_SERVER_ID),
                props.updated_on.isoformat(),
            )
        return deleted


def _purgeable(poller: Any) -> bool:
    """Whether the vault lets a deleted key be purged (DeletionRecoveryLevel "...+Purgeable")."""
    deleted = poller.result()
    level = getattr(getattr(deleted, "properties", None), "recovery_level", None)
    return level is None or "purgeable" in str(level).lower()


def _recency(props: KeyProperties, known: KeyVaultKey) -> tuple[Any, bool, str]:
    """Order of a creator's versions: by `created`; within its one-second resolution the
    version known to be newer (the one just created, or GET's current one), then the id."""
    return (props.created_on, props.version == known.properties.version, str(props.version))


def _same_name(a: str | None, b: str | None) -> bool:
    """Key Vault key names compare case-insensitively."""
    return a is not None and b is not None and a.lower() == b.lower()
