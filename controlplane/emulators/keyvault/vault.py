"""The Key Vault keys REST API (data plane), as the azure-keyvault-keys SDK calls it.

Per request: api-version present -> bearer token (else the 401 challenge) -> network rules
(firewall) -> authorization by the vault's permission model (RBAC data action, or access policy
key permission) -> service limits -> the operation -> one audit line.

Shapes and codes follow the REST spec (Azure/azure-rest-api-specs
`specification/keyvault/data-plane/Microsoft.KeyVault/stable/7.5/keys.json`) and the service's
observed answers (the tests name the source of each).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import identity as ident
from .crypto_ops import AlgorithmError, KeySpec, sign_digest, verify_digest
from .httpd import Request, Response
from .limits import key_class
from .state import VAULT_RESOURCE
from .store import KeyVersion, VaultError, valid_key_name
from .tokens import TokenError, b64url

if TYPE_CHECKING:
    from .state import EmulatorState

__all__ = ["VaultApi"]

PAGE_MAX = 25
# Key tags (learn.microsoft.com "Azure Key Vault keys details", Key tags): up to 15 tags, names
# and values up to 256 characters.
MAX_TAGS = 15
MAX_TAG_LENGTH = 256


def _b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise VaultError(400, "BadParameter", "Invalid base64url value") from exc


@dataclass
class _Route:
    operation: str
    action: str  # the RBAC data action
    permission: str  # the access policy key permission
    name: str | None = None
    version: str = ""


def _route(method: str, path: str) -> _Route | None:
    parts = path.split("/")[1:]
    n = len(parts)
    if n == 0:
        return None
    head = parts[0].lower()
    if head == "keys":
        if n == 1 or (n == 2 and parts[1] == ""):
            return _Route("KeyList", ident.ACTION_READ, "list") if method == "GET" else None
        name = parts[1]
        if n == 3 and parts[2] == "create" and method == "POST":
            return _Route("KeyCreate", ident.ACTION_CREATE, "create", name)
        if n == 3 and parts[2] == "versions" and method == "GET":
            return _Route("KeyListVersions", ident.ACTION_READ, "list", name)
        if n == 4 and method == "POST" and parts[3] in ("sign", "verify"):
            if parts[3] == "sign":
                return _Route("KeySign", ident.ACTION_SIGN, "sign", name, parts[2])
            return _Route("KeyVerify", ident.ACTION_VERIFY, "verify", name, parts[2])
        if n in (2, 3):
            version = parts[2] if n == 3 else ""
            if method == "GET":
                return _Route("KeyGet", ident.ACTION_READ, "get", name, version)
            if method == "PATCH":
                return _Route("KeyUpdate", ident.ACTION_UPDATE, "update", name, version)
            if method == "DELETE" and version == "":
                return _Route("KeyDelete", ident.ACTION_DELETE, "delete", name)
        return None
    if head == "deletedkeys":
        # No deletedkeys/* data actions exist: reading deleted keys is keys/read.
        if n == 1 or (n == 2 and parts[1] == ""):
            if method == "GET":
                return _Route("KeyListDeleted", ident.ACTION_READ, "list")
            return None
        name = parts[1]
        if n == 2 and method == "GET":
            return _Route("KeyGetDeleted", ident.ACTION_READ, "get", name)
        if n == 2 and method == "DELETE":
            return _Route("KeyPurge", ident.ACTION_PURGE, "purge", name)
        if n == 3 and parts[2] == "recover" and method == "POST":
            return _Route("KeyRecover", ident.ACTION_RECOVER, "recover", name)
    return None


def _check_tags(body: dict[str, Any]) -> None:
    tags = body.get("tags")
    if tags is None:
        return
    if not isinstance(tags, dict):
        raise VaultError(400, "BadParameter", "Property tags must be an object.")
    if len(tags) > MAX_TAGS:
        raise VaultError(400, "BadParameter", f"A maximum of {MAX_TAGS} tags is allowed.")
    for name, value in tags.items():
        if len(str(name)) > MAX_TAG_LENGTH or len(str(value)) > MAX_TAG_LENGTH:
            raise VaultError(
                400,
                "BadParameter",
                f"Tag names and values are limited to {MAX_TAG_LENGTH} characters.",
            )


class VaultApi:
    def __init__(self, app: EmulatorState) -> None:
        self.app = app

    # -- helpers -------------------------------------------------------------------------
    def operation_name(self, request: Request) -> str:
        route = _route(request.method, request.path)
        return route.operation if route else "Unknown"

    @property
    def _vault_ref(self) -> str:
        return f"{self.app.vault_name};location={self.app.location}"

    def _caller(self, principal: ident.Principal) -> str:
        return (
            f"appid={principal.client_id};oid={principal.object_id};"
            f"iss=https://sts.windows.net/{self.app.tenant_id}/"
        )

    def _challenge_header(self) -> str:
        authority = self.app.base_url.rstrip("/")
        return (
            f'Bearer authorization="{authority}/{self.app.tenant_id}", resource="{VAULT_RESOURCE}"'
        )

    def _unauthorized(self, message: str) -> Response:
        return Response(
            401,
            {"error": {"code": "Unauthorized", "message": message}},
            {"WWW-Authenticate": self._challenge_header()},
        )

    def _authenticate(self, request: Request) -> ident.Principal | Response:
        header = request.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._unauthorized("AKV10000: Request is missing a Bearer or PoP token.")
        try:
            claims = self.app.signer.verify(
                token.strip(), audiences=(VAULT_RESOURCE, VAULT_RESOURCE + "/")
            )
        except TokenError as exc:
            return self._unauthorized(f"AKV10022: Invalid token: {exc}.")
        if claims.get("tid") != self.app.tenant_id:
            return self._unauthorized("AKV10032: Invalid issuer.")
        principal = self.app.principals.get(str(claims.get("appid", "")))
        if principal is None:
            return self._unauthorized("AKV10046: Unknown caller.")
        return principal

    def _audit(
        self,
        request: Request,
        route: _Route | None,
        principal: ident.Principal | None,
        status: int,
        version: str | None = None,
        properties: dict[str, Any] | None = None,
    ) -> None:
        if route is None:
            return
        self.app.audit.record(
            operation=route.operation,
            identity=(
                {"claim": {"appid": principal.client_id, "oid": principal.object_id}}
                if principal
                else None
            ),
            key_name=route.name,
            key_version=version or route.version or None,
            status=status,
            request_uri=request.raw_path,
            caller_ip=request.client_ip,
            emulated_time=self.app.clock.now(),
            properties=properties,
        )

    def _firewall(self, request: Request, principal: ident.Principal) -> None:
        """Network rules: the answer and inner code of a request the firewall blocks."""
        if self.app.network.admits(request.client_ip):
            return
        raise VaultError(
            403,
            "Forbidden",
            "Client address is not authorized and caller is not a trusted service.\r\n"
            f"Client address: {request.client_ip}\r\nCaller: {self._caller(principal)}\r\n"
            f"Vault: {self._vault_ref}",
            inner="ForbiddenByFirewall",
        )

    def _authorize(self, principal: ident.Principal, route: _Route) -> None:
        if self.app.permission_model == ident.RBAC:
            if self.app.principals.rbac_allows(principal, route.action):
                return
            resource = f"/subscriptions/{self.app.subscription_id}/resourcegroups/emulator/providers/microsoft.keyvault/vaults/{self.app.vault_name}"
            if route.name:
                resource += f"/keys/{route.name}"
            raise VaultError(
                403,
                "Forbidden",
                "Caller is not authorized to perform action on resource.\r\nIf role "
                "assignments, deny assignments or role definitions were changed recently, "
                "please observe propagation time.\r\n"
                f"Caller: {self._caller(principal)}\r\nAction: '{route.action}'\r\n"
                f"Resource: '{resource.lower()}'\r\nAssignment: (not found)\r\n"
                "DenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\n"
                f"Vault: {self._vault_ref}\r\n",
                inner="ForbiddenByRbac",
            )
        if route.permission in principal.key_permissions:
            return
        raise VaultError(
            403,
            "Forbidden",
            f"The user, group or application '{self._caller(principal)}' does not have keys "
            f"{route.permission} permission on key vault '{self._vault_ref}'. For help "
            "resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
            inner="AccessDenied",
        )

    def _throttle(self, cls: str) -> None:
        retry_after = self.app.limiter.acquire(cls)
        if retry_after is not None:
            raise _Throttled(retry_after if self.app.limiter.limits.retry_after else None)

    def _key_class(self, name: str) -> str:
        """The limit class of a transaction on key `name` (its newest version's type)."""
        latest = self.app.store.latest(name)
        return key_class(latest.kty, latest.key_size) if latest else "vault"

    def throttled(self, request: Request, operation: str, retry_after: int | None) -> Response:
        """An injected 429 (fault), in the same shape as a real limit hit."""
        route = _route(request.method, request.path)
        self._audit(request, route, None, 429)
        return _throttle_response(retry_after)

    # -- dispatch ------------------------------------------------------------------------
    def handle(self, request: Request, operation: str) -> Response:
        route = _route(request.method, request.path)
        if route is None:
            return Response(
                404, {"error": {"code": "NotFound", "message": f"No route for {request.path}"}}
            )
        if not request.param("api-version"):
            return Response(
                400,
                {
                    "error": {
                        "code": "BadParameter",
                        "message": "The api-version parameter is missing.",
                    }
                },
            )
        auth = self._authenticate(request)
        if isinstance(auth, Response):
            return auth
        principal = auth
        try:
            if route.name is not None and not valid_key_name(route.name):
                raise VaultError(
                    400, "BadParameter", f"The request URI contains an invalid name: {route.name}"
                )
            self._firewall(request, principal)
            self._authorize(principal, route)
            status, body, version, props = self._execute(request, route)
        except _Throttled as t:
            self._audit(request, route, principal, 429)
            return _throttle_response(t.retry_after)
        except VaultError as err:
            self._audit(request, route, principal, err.status)
            return Response(err.status, err.body())
        self._audit(request, route, principal, status, version, props)
        return Response(status, body)

    def _execute(
        self, request: Request, route: _Route
    ) -> tuple[int, Any, str | None, dict[str, Any] | None]:
        store, base = self.app.store, self.app.base_url
        op, name = route.operation, route.name
        try:
            body = request.json() if request.method in ("POST", "PATCH", "PUT") else {}
        except ValueError as exc:
            raise VaultError(400, "BadParameter", "The request body is not valid JSON") from exc

        if op == "KeyCreate":
            assert name is not None
            try:
                spec = KeySpec.from_request(body)
            except AlgorithmError as exc:
                raise VaultError(
                    400, "BadParameter", str(exc), inner="KeyTypeNotSupported"
                ) from exc
            if spec.is_hsm and self.app.sku != "premium":
                raise VaultError(
                    400, "BadParameter", "Hardware key operation not allowed on standard vault."
                )
            _check_tags(body)
            self._throttle("hsm_create" if spec.is_hsm else "software_create")
            try:
                stored, kv = store.create(name, body)
            except AlgorithmError as exc:
                raise VaultError(400, "BadParameter", str(exc)) from exc
            return 200, store.bundle(base, stored, kv), kv.version, None

        if op == "KeyList":
            self._throttle("vault")
            names = store.names()
            page, next_link = self._page(request, names, "keys")
            items = []
            for n in page:
                latest = store.latest(n)
                if latest is not None:
                    items.append(store.item(base, n, latest, with_version=False))
            return 200, {"value": items, "nextLink": next_link}, None, None

        if op == "KeyListVersions":
            assert name is not None
            self._throttle(self._key_class(name))
            versions = store.versions(name)
            stored = store.display_name(name)
            ids = [v.version for v in versions]
            page, next_link = self._page(request, ids, f"keys/{stored}/versions")
            by_id = {v.version: v for v in versions}
            items = [store.item(base, stored, by_id[i], with_version=True) for i in page]
            return 200, {"value": items, "nextLink": next_link}, None, None

        if op == "KeyGet":
            assert name is not None
            self._throttle(self._key_class(name))
            kv = store.get(name, route.version)
            return 200, store.bundle(base, store.display_name(name), kv), kv.version, None

        if op == "KeyUpdate":
            assert name is not None
            _check_tags(body)
            self._throttle(self._key_class(name))
            kv = store.update(name, route.version, body)
            return 200, store.bundle(base, store.display_name(name), kv), kv.version, None

        if op == "KeyDelete":
            assert name is not None
            self._throttle(self._key_class(name))
            deleted = store.delete(name)
            kv = deleted.versions[-1]
            out = {
                **store.deleted_fields(base, deleted),
                **store.bundle(base, deleted.name, kv),
            }
            return 200, out, kv.version, None

        if op in ("KeySign", "KeyVerify"):
            assert name is not None
            kv = store.get(name, route.version)
            self._throttle(key_class(kv.kty, kv.key_size))
            key_op = "sign" if op == "KeySign" else "verify"
            self._check_usable(kv, key_op)
            alg = str(body.get("alg") or "")
            stored = store.display_name(name)
            try:
                if op == "KeySign":
                    digest = _b64url_decode(str(body.get("value") or ""))
                    sig = sign_digest(store.material(kv), kv.spec, alg, digest)
                    out = {"kid": f"{base}keys/{stored}/{kv.version}", "value": b64url(sig)}
                else:
                    digest = _b64url_decode(str(body.get("digest") or ""))
                    sig = _b64url_decode(str(body.get("value") or ""))
                    out = {"value": verify_digest(store.material(kv), kv.spec, alg, digest, sig)}
            except AlgorithmError as exc:
                raise VaultError(400, "BadParameter", str(exc)) from exc
            return 200, out, kv.version, {"algorithm": alg}

        if op == "KeyListDeleted":
            self._throttle("vault")
            names = store.deleted_names()
            page, next_link = self._page(request, names, "deletedkeys")
            items = []
            for n in page:
                try:
                    d = store.get_deleted(n)
                except VaultError:
                    continue
                items.append(
                    {
                        **store.item(base, d.name, d.versions[-1], with_version=False),
                        **store.deleted_fields(base, d),
                    }
                )
            return 200, {"value": items, "nextLink": next_link}, None, None

        if op == "KeyGetDeleted":
            assert name is not None
            d = store.get_deleted(name)
            kv = d.versions[-1]
            self._throttle(key_class(kv.kty, kv.key_size))
            return (
                200,
                {**store.deleted_fields(base, d), **store.bundle(base, d.name, kv)},
                kv.version,
                None,
            )

        if op == "KeyPurge":
            assert name is not None
            self._throttle("vault")
            store.purge(name, self._vault_ref)
            return 204, None, None, None

        if op == "KeyRecover":
            assert name is not None
            self._throttle("vault")
            stored, kv = store.recover(name, base)
            return 200, store.bundle(base, stored, kv), kv.version, None

        raise VaultError(400, "BadParameter", f"Unsupported operation {op}")

    def _check_usable(self, kv: KeyVersion, key_op: str) -> None:
        """Key state refusals. Expired and not-yet-valid keys still verify (learn.microsoft.com
        "Azure Key Vault keys details", Date-time controlled operations); disabled keys do
        nothing."""
        now = self.app.clock.now()
        if not kv.enabled:
            raise VaultError(
                403,
                "Forbidden",
                f"Operation {key_op} is not allowed on a disabled key.",
                inner="KeyDisabled",
            )
        if key_op != "verify" and kv.exp is not None and now >= kv.exp:
            raise VaultError(
                403,
                "Forbidden",
                f"Operation {key_op} is not allowed on an expired key.",
                inner="KeyExpired",
            )
        if key_op != "verify" and kv.nbf is not None and now < kv.nbf:
            raise VaultError(
                403,
                "Forbidden",
                f"Operation {key_op} is not allowed on a key that is not yet valid.",
                inner="KeyNotYetValid",
            )
        if key_op not in kv.key_ops:
            raise VaultError(
                403,
                "Forbidden",
                f"Operation {key_op} is not permitted on this key.",
                inner="KeyOperationForbidden",
            )

    def _page(self, request: Request, ids: list[str], path: str) -> tuple[list[str], str | None]:
        """Key Vault paging: at most `maxresults` (<= 25) per page, the rest via nextLink."""
        raw_max = request.param("maxresults")
        try:
            maxresults = PAGE_MAX if raw_max is None else int(raw_max)
        except ValueError as exc:
            raise VaultError(400, "BadParameter", "maxresults must be an integer") from exc
        if not 1 <= maxresults <= PAGE_MAX:
            raise VaultError(400, "BadParameter", f"maxresults must be within 1 and {PAGE_MAX}")
        # The skip token is the last id of the previous page; ids are sorted names or
        # version ids, all [0-9a-zA-Z-], so it needs no escaping.
        token = request.param("$skiptoken")
        start = 0
        if token:
            start = ids.index(token) + 1 if token in ids else len(ids)
        page = ids[start : start + maxresults]
        if start + maxresults >= len(ids):
            return page, None
        api_version = request.param("api-version") or ""
        next_link = (
            f"{self.app.base_url}{path}?api-version={api_version}"
            f"&$skiptoken={page[-1]}&maxresults={maxresults}"
        )
        return page, next_link


class _Throttled(Exception):
    def __init__(self, retry_after: int | None) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


def _throttle_response(retry_after: int | None) -> Response:
    wait = f" Retry after {retry_after} seconds." if retry_after is not None else ""
    return Response(
        429,
        {
            "error": {
                "code": "Throttled",
                "message": "Request was not processed because too many requests were received. "
                f"Reason: VaultRequestTypeLimitReached.{wait}",
            }
        },
        {"Retry-After": str(retry_after)} if retry_after is not None else {},
    )
