"""A small synchronous client for the control plane HTTP API (docs/API.md), for the provider.

httpx is imported on first use so that `terraform validate` (which never talks to the control
plane) does not pay for it. The token is only ever put in the Authorization header: it is never
logged and never part of an error message.

An answer is believed only when it comes from the control plane: every response must carry the
`Spirl-Api-Version` header with a version this client knows (controlplane/api/identity.py), and
only a JSON body `{"error": "not_found"}` makes a `NotFoundError`, the one error on which
resources drop their state. A 404 from anything else (another HTTP server, a proxy's HTML page, a
wrong path prefix) is an `ApiError` and the state stays as it is. 429 and 503 are retried with
back-off (`Retry-After` when given).
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from controlplane.tls import verification_failure

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_RETRIES = 3
# What controlplane/api/identity.py sends; kept here as literals so that the provider does not
# import the server package.
API_VERSION_HEADER = "Spirl-Api-Version"
KNOWN_API_VERSIONS = ("1",)
RETRY_STATUSES = (429, 503)
MAX_RETRY_DELAY_SECONDS = 30.0


class ApiError(Exception):
    """The control plane answered with an error (or could not be reached: status 0)."""

    def __init__(self, status: int, code: str, message: str, body: dict[str, Any] | None = None):
        super().__init__(f"{message} (HTTP {status}, {code})" if status else message)
        self.status = status
        self.code = code
        self.message = message
        self.body = body or {}


class NotFoundError(ApiError):
    """The control plane itself said `not_found`: the object does not exist (any more)."""


class NotControlPlaneError(ApiError):
    """The answer did not come from a spirl control plane (or from one with an unknown API)."""


class ConflictError(ApiError):
    """409 version_conflict: someone else wrote the scope since we last read it."""

    @property
    def expected_version(self) -> Any:
        return self.body.get("expected_version")

    @property
    def current_version(self) -> Any:
        return self.body.get("current_version")


class ApiClient:
    """Calls `/v1/...` routes with a bearer token; JSON in, JSON out."""

    def __init__(
        self,
        endpoint: str,
        token: str,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retries: int = DEFAULT_RETRIES,
        verify: ssl.SSLContext | bool = True,
    ):
        self.endpoint = endpoint.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._verify = verify  # a context trusting only the provider's ca_file, or the default
        self._retries = retries
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()  # tf serves requests from a thread pool

    def __repr__(self) -> str:  # never show the token
        return f"ApiClient(endpoint={self.endpoint!r})"

    def _client(self) -> httpx.Client:
        with self._lock:
            return self._client_locked()

    def warm_up(self) -> None:
        """Import httpx and build the client ahead of the first request (called off-thread)."""
        self._client()

    def _client_locked(self) -> httpx.Client:
        if self._http is None:
            import httpx  # lazy: keeps provider start and `terraform validate` fast

            self._http = httpx.Client(
                base_url=self.endpoint,
                timeout=self._timeout,
                verify=self._verify,
                headers={
                    "Authorization": f"Bearer {self._token}",
                    "User-Agent": "terraform-provider-spirl/0.1.0",
                },
            )
        return self._http

    def close(self) -> None:
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        import httpx

        attempt = 0
        while True:
            log.debug("%s %s", method, path)
            try:
                resp = self._client().request(method, path, json=json, params=params)
            except httpx.TimeoutException as exc:
                raise ApiError(
                    0,
                    "timeout",
                    f"the control plane at {self.endpoint} did not answer {method} {path} within "
                    f"{self._timeout:g}s (provider setting `request_timeout`)",
                ) from exc
            except httpx.HTTPError as exc:
                refused = verification_failure(exc)
                if refused is not None:
                    raise ApiError(
                        0,
                        "untrusted_certificate",
                        f"the control plane at {self.endpoint} presented a certificate the "
                        f"provider does not trust ({refused}); set ca_file (or $SPIRL_CA_FILE) to "
                        "the CA that signed it",
                    ) from exc
                raise ApiError(
                    0,
                    "unreachable",
                    f"cannot reach the control plane at {self.endpoint}: {type(exc).__name__}: {exc}",
                ) from exc
            if resp.status_code not in RETRY_STATUSES or attempt >= self._retries:
                return self._answer(method, path, resp)
            delay = retry_delay(resp.headers.get("Retry-After"), attempt)
            attempt += 1
            log.info(
                "%s %s: HTTP %s, retry %d of %d in %.1fs",
                method,
                path,
                resp.status_code,
                attempt,
                self._retries,
                delay,
            )
            time.sleep(delay)

    def _answer(self, method: str, path: str, resp: httpx.Response) -> dict[str, Any]:
        """The JSON body of a success, or the matching ApiError."""
        where = f"{method} {self.endpoint}{path}"
        version = resp.headers.get(API_VERSION_HEADER)
        if version is None:
            kind = resp.headers.get("content-type", "no content type").split(";")[0]
            raise NotControlPlaneError(
                resp.status_code,
                "not_control_plane",
                f"{where} was answered with HTTP {resp.status_code} ({kind}) by something that is "
                f"not a spirl control plane (no {API_VERSION_HEADER} header): check the endpoint "
                "(host, port, no path prefix; $SPIRL_ENDPOINT or the provider block). Nothing "
                "was changed",
            )
        if version not in KNOWN_API_VERSIONS:
            raise NotControlPlaneError(
                resp.status_code,
                "unknown_api_version",
                f"{where}: the control plane speaks API version {version!r}; this provider "
                f"knows {', '.join(KNOWN_API_VERSIONS)}. Use a provider version made for it",
            )
        body: Any = {}
        if resp.content and resp.status_code != 204:
            try:
                body = resp.json()
            except ValueError:
                body = None
        if resp.is_success:
            if not isinstance(body, dict):
                raise ApiError(
                    resp.status_code, "bad_response", f"{where}: the answer is not a JSON object"
                )
            return body
        if not isinstance(body, dict):
            body = {}
        code = str(body.get("error") or "http_error")
        message = str(body.get("message") or resp.reason_phrase or "request failed")
        cls: type[ApiError] = ApiError
        if resp.status_code == 404 and code == "not_found":
            cls = NotFoundError
        elif resp.status_code == 404:
            code = "no_route"
            message = (
                f"{where}: HTTP 404 without the control plane's not_found error: no such route "
                "(is the endpoint the control plane's base URL, without a path prefix?)"
            )
        elif resp.status_code == 409 and code == "version_conflict":
            cls = ConflictError
        elif resp.status_code == 401:
            message = "the control plane rejected the token (check `token` / SPIRL_TOKEN)"
        elif resp.status_code == 403:
            message = f"the token may not do this: {message}"
        raise cls(resp.status_code, code, message, body)

    # -- objects ----------------------------------------------------------------------------

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request("GET", path, params=params)

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, json=payload)

    def delete(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request("DELETE", path, params=params)

    def list_items(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        items = self.get(path, params).get("items", [])
        return [i for i in items if isinstance(i, dict)]

    # -- config -----------------------------------------------------------------------------

    @staticmethod
    def config_path(scope: str, scope_id: str) -> str:
        return f"/v1/config/{scope}/{quote(scope_id, safe='')}"

    def get_config(self, scope: str, scope_id: str) -> dict[str, Any]:
        return self.get(self.config_path(scope, scope_id))

    def get_config_version(self, scope: str, scope_id: str, version: int) -> dict[str, Any]:
        return self.get(f"{self.config_path(scope, scope_id)}/versions/{int(version)}")

    def put_config(
        self,
        scope: str,
        scope_id: str,
        yaml_text: str,
        *,
        prune: bool,
        expected_version: int | None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"yaml": yaml_text, "prune": prune, "validate_only": False}
        if expected_version is not None:
            payload["expected_version"] = int(expected_version)
        return self.request("PUT", self.config_path(scope, scope_id), json=payload)

    def delete_section(
        self, scope: str, scope_id: str, section: str, *, expected_version: int | None
    ) -> dict[str, Any]:
        params = (
            {"expected_version": int(expected_version)} if expected_version is not None else None
        )
        path = f"{self.config_path(scope, scope_id)}/sections/{quote(section, safe='')}"
        return self.delete(path, params)

    def rollout_status(self, scope: str, scope_id: str, version: int) -> dict[str, Any]:
        """How far one stored version of a scope reached its servers (docs/API.md, Rollouts)."""
        path = f"/v1/rollouts/{scope}/{quote(scope_id, safe='')}"
        return self.get(path, {"version": int(version)})


def retry_delay(retry_after: str | None, attempt: int) -> float:
    """Seconds to wait before retry number `attempt` + 1: `Retry-After` (seconds) when the answer
    gives it, else 0.5, 1, 2, 4 ... s with jitter; at most 30 s."""
    value = (retry_after or "").strip()
    if value.isascii() and value.isdigit():  # RFC 9110: delay-seconds
        return min(float(value), MAX_RETRY_DELAY_SECONDS)
    # An HTTP date (rare) or no header: back off.
    return min(0.5 * 2**attempt * random.uniform(0.75, 1.25), MAX_RETRY_DELAY_SECONDS)
