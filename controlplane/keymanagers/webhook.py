"""The webhook key manager: keys live in an external key service reached over HTTP(S).

Built from the KeyManager section's ``spec.extensions.webhook``::

    webhook:
      webhookURL: "https://keys.internal:8443/servers/a"   # required, http or https
      caCertPath: "/etc/spirl/keyservice-ca.pem"           # optional: trust only this CA
      timeout: "5s"                                        # optional, default 5s

The four-call protocol (create key, list keys, sign digest, release key) is specified in
docs/webhook-key-service.md; ``controlplane.emulators.keyservice`` is a real service that
speaks it. Errors map onto the contract: network failures, timeouts, 429 and 5xx are
``TransientKeyManagerError``; 404 on a key is ``KeyNotFoundError``; everything else is a
``KeyManagerError`` naming the call and the service's reason.
"""

from __future__ import annotations

import base64
import binascii
import logging
import ssl
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from controlplane.documents import parse_duration
from controlplane.keymanagers.base import (
    KeyManagerError,
    KeyNotFoundError,
    KeyType,
    PublicKey,
    SigningAlgorithm,
    TransientKeyManagerError,
)
from controlplane.keymanagers.signatures import check_digest_length, key_type_of_public_key
from controlplane.keymanagers.validation import coerce_key_type, require_key_id

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "WebhookKeyManager", "redact_url"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 5.0
_TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_REASON = 300


def redact_url(url: str) -> str:
    """The URL without userinfo, query or fragment: safe for logs and error messages."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _timeout_seconds(value: Any) -> float:
    if value is None:
        return DEFAULT_TIMEOUT_SECONDS
    # Numbers (seconds) are accepted for programmatic use; documents carry duration strings.
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value).total_seconds()
        except ValueError as exc:
            raise KeyManagerError(f"webhook timeout {value!r}: {exc}") from None
    else:
        raise KeyManagerError(f"webhook timeout must be a duration string, got {value!r}")
    if seconds <= 0:
        raise KeyManagerError("webhook timeout must be longer than zero")
    return seconds


class WebhookKeyManager:
    """KeyManager backed by an external key service (docs/webhook-key-service.md). Thread-safe."""

    type_name = "webhook"

    def __init__(self, config: Mapping[str, Any]) -> None:
        if not isinstance(config, Mapping):
            raise KeyManagerError("webhook key manager config must be a mapping")
        url = config.get("webhookURL")
        if not isinstance(url, str) or not url:
            raise KeyManagerError("webhook key manager needs webhookURL")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise KeyManagerError(
                f"webhookURL {redact_url(url)!r} must be an http or https URL with a host"
            )
        self._url = url.rstrip("/")
        self._display_url = redact_url(self._url)
        self._timeout = _timeout_seconds(config.get("timeout"))
        verify: ssl.SSLContext | bool = True
        ca_path = config.get("caCertPath")
        if ca_path:
            try:
                verify = ssl.create_default_context(cafile=str(ca_path))
            except (OSError, ssl.SSLError) as exc:
                raise KeyManagerError(f"cannot load caCertPath {ca_path}: {exc}") from None
        self._ca_path = str(ca_path) if ca_path else None
        self._client = httpx.Client(
            timeout=self._timeout,
            verify=verify,
            follow_redirects=False,
            headers={"User-Agent": "spirl-webhook-keymanager/1", "Accept": "application/json"},
        )
        self._lock = threading.Lock()
        self._cache: dict[str, PublicKey] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"WebhookKeyManager(url={self._display_url!r})"

    @property
    def url(self) -> str:
        """The service URL, redacted (no userinfo or query)."""
        return self._display_url

    # -- KeyManager -------------------------------------------------------------------------

    def check(self) -> None:
        """GET /keys answers with a well-formed key list."""
        self.list_public_keys()

    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        key_id = require_key_id(key_id)
        key_type = coerce_key_type(key_type)
        body = self._call("POST", "/keys", {"key_id": key_id, "key_type": key_type.value})
        key = self._public_key_from(body, "POST /keys")
        if key.key_id != key_id or key.key_type is not key_type:
            raise KeyManagerError(
                f"webhook key service at {self._display_url} answered POST /keys for "
                f"{key_id!r} ({key_type.value}) with {key.key_id!r} ({key.key_type.value})"
            )
        with self._lock:
            self._cache[key_id] = key
        log.info(
            "webhook key service %s generated %s key %r", self._display_url, key_type.value, key_id
        )
        return key

    def get_public_key(self, key_id: str) -> PublicKey:
        key_id = require_key_id(key_id)
        with self._lock:
            cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        for key in self.list_public_keys():  # fills the cache
            if key.key_id == key_id:
                return key
        raise KeyNotFoundError(f"no key {key_id!r} in webhook key service at {self._display_url}")

    def list_public_keys(self) -> list[PublicKey]:
        body = self._call("GET", "/keys")
        items = body.get("keys")
        if not isinstance(items, list):
            raise self._malformed("GET /keys", "'keys' must be a list")
        keys = [self._public_key_from(item, "GET /keys") for item in items]
        if len({k.key_id for k in keys}) != len(keys):
            raise self._malformed("GET /keys", "a key id is listed twice")
        with self._lock:
            # The list is the service's truth: forget keys it no longer has.
            self._cache = {k.key_id: k for k in keys}
        return sorted(keys, key=lambda k: k.key_id)

    def sign_digest(self, key_id: str, digest: bytes, algorithm: SigningAlgorithm) -> bytes:
        key_id = require_key_id(key_id)
        try:
            check_digest_length(digest, algorithm.hash)
        except ValueError as exc:
            raise KeyManagerError(str(exc)) from None
        request = {
            "digest": base64.b64encode(digest).decode("ascii"),
            "hash": algorithm.hash.value,
            "rsa_pss": algorithm.rsa_pss,
        }
        body = self._call("POST", f"/keys/{_segment(key_id)}/sign", request, key_id=key_id)
        try:
            signature = base64.b64decode(body["signature"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise self._malformed("sign", "'signature' must be base64") from None
        if not signature:
            raise self._malformed("sign", "empty signature")
        return signature

    def release_key(self, key_id: str) -> None:
        """DELETE the key in the service (not part of the KeyManager protocol)."""
        key_id = require_key_id(key_id)
        self._call("DELETE", f"/keys/{_segment(key_id)}", key_id=key_id)
        with self._lock:
            self._cache.pop(key_id, None)
        log.info("webhook key service %s released key %r", self._display_url, key_id)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._client.close()

    # -- HTTP ------------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        json_body: Mapping[str, Any] | None = None,
        *,
        key_id: str | None = None,
    ) -> dict[str, Any]:
        if self._closed:
            raise KeyManagerError(f"webhook key manager for {self._display_url} is closed")
        what = f"{method} {path}"
        try:
            response = self._client.request(method, self._url + path, json=json_body)
        except httpx.TimeoutException:
            raise TransientKeyManagerError(
                f"webhook key service at {self._display_url} did not answer {what} "
                f"within {self._timeout:g}s"
            ) from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            if "CERTIFICATE_VERIFY_FAILED" in reason:
                # A certificate the CA does not vouch for will not fix itself: not transient.
                raise KeyManagerError(
                    f"TLS verification of webhook key service {self._display_url} failed "
                    f"({'caCertPath ' + self._ca_path if self._ca_path else 'system CAs'}): {reason}"
                ) from None
            raise TransientKeyManagerError(
                f"cannot reach webhook key service at {self._display_url} ({what}): {reason}"
            ) from None
        except httpx.HTTPError as exc:
            raise KeyManagerError(
                f"webhook key service request {what} to {self._display_url} failed: {exc}"
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            if status == 204 or not response.content:
                return {}
            try:
                body = response.json()
            except ValueError:
                raise self._malformed(what, "body is not JSON") from None
            if not isinstance(body, dict):
                raise self._malformed(what, "body is not a JSON object")
            return body
        reason = self._reason(response)
        if status == 404 and key_id is not None:
            with self._lock:
                self._cache.pop(key_id, None)
            raise KeyNotFoundError(
                f"no key {key_id!r} in webhook key service at {self._display_url}: {reason}"
            )
        if status == 404:
            raise KeyManagerError(
                f"{self._display_url} does not serve the webhook key service protocol: "
                f"{what} answered 404 ({reason})"
            )
        message = (
            f"webhook key service at {self._display_url} answered {what} with {status}: {reason}"
        )
        if status in _TRANSIENT_STATUSES or status >= 500:
            retry_after = response.headers.get("Retry-After")
            if retry_after:
                message += f" (retry after {retry_after[:20]})"
            raise TransientKeyManagerError(message)
        raise KeyManagerError(message)

    @staticmethod
    def _reason(response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            reason = body["message"]
            if isinstance(body.get("error"), str):
                reason = f"{body['error']}: {reason}"
        else:
            reason = response.reason_phrase or "no reason given"
        return reason[:_MAX_REASON]

    def _malformed(self, what: str, why: str) -> KeyManagerError:
        return KeyManagerError(
            f"webhook key service at {self._display_url} sent a malformed answer to {what}: {why}"
        )

    def _public_key_from(self, item: Any, what: str) -> PublicKey:
        if not isinstance(item, dict):
            raise self._malformed(what, "a key must be a JSON object")
        key_id, type_text, public_b64 = (
            item.get("key_id"),
            item.get("key_type"),
            item.get("public_key"),
        )
        if not isinstance(key_id, str) or not key_id:
            raise self._malformed(what, "'key_id' must be a non-empty string")
        try:
            key_type = KeyType(type_text)
        except ValueError:
            raise self._malformed(what, f"unknown key_type {type_text!r}") from None
        if not isinstance(public_b64, str):
            raise self._malformed(what, f"'public_key' of {key_id!r} must be a base64 string")
        try:
            public_der = base64.b64decode(public_b64, validate=True)
            actual = key_type_of_public_key(public_der)
        except (TypeError, ValueError, binascii.Error) as exc:
            raise self._malformed(
                what, f"'public_key' of {key_id!r} is not a DER public key: {exc}"
            ) from None
        if actual is not key_type:
            raise self._malformed(
                what, f"key {key_id!r} says {key_type.value} but holds {actual.value}"
            )
        return PublicKey(
            key_id,
            key_type,
            public_der,
            provider_ref=f"{self._display_url}/keys/{_segment(key_id)}",
        )


def _segment(key_id: str) -> str:
    # Ids may hold '/', '?' or '#': encode everything that is not unreserved.
    return quote(key_id, safe="")
