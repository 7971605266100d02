"""The Key Vault keys REST API (data plane), as the azure-keyvault-keys SDK calls it.

Per request: api-version present -> bearer token (else the 401 challenge) -> RBAC
-> service limits -> the operation -> one audit line.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import identity as ident
from .crypto_ops import AlgorithmError, KeySpec, sign_digest, verify_digest
from .httpd import Request, Response
from .store import KeyVersion, VaultError, valid_key_name
from .tokens import TokenError, b64url

if TYPE_CHECKING:
    from .app import EmulatorApp

__all__ = ["VaultApi"]

PAGE_MAX = 25


def _b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise VaultError(400, "BadParameter", "Invalid base64url value") from exc


@dataclass
class _Route:
    operation: str
    action: str
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
            return _Route("KeyList", ident.ACTION_READ) if method == "GET" else None
        name = parts[1]
        if n == 3 and parts[2] == "create" and method == "POST":
            return _Route("KeyCreate", ident.ACTION_CREATE, name)
        if n == 3 and parts[2] == "versions" and method == "GET":
            return _Route("KeyListVersions", ident.ACTION_READ, name)
        if n == 4 and method == "POST" and parts[3] in ("sign", "verify"):
            if parts[3] == "sign":
                return _Route("KeySign", ident.ACTION_SIGN, name, parts[2])
            return _Route("KeyVerify", ident.ACTION_VERIFY, name, parts[2])
        if n in (2, 3):
            version = parts[2] if n == 3 else ""
            if method == "GET":
                return _Route("KeyGet", ident.ACTION_READ, name, version)
            if method == "PATCH":
                return _Route("KeyUpdate", ident.ACTION_UPDATE, name, version)
            if method == "DELETE" and version == "":
                return _Route("KeyDelete", ident.ACTION_DELETE, name)
        return None
    if head == "deletedkeys":
        if n == 1 or (n == 2 and parts[1] == ""):
            return _Route("KeyListDeleted", ident.ACTION_DELETED_READ) if method == "GET" else None
        name = parts[1]
        if n == 2 and method == "GET":
            return _Route("KeyGetDeleted", ident.ACTION_DELETED_READ, name)
        if n == 2 and method == "DELETE":
            return _Route("KeyPurge", ident.ACTION_PURGE, name)
        if n == 3 and parts[2] == "recover" and method == "POST":
            return _Route("KeyRecover", ident.ACTION_RECOVER, name)
    return None


def _sign_class(kv: KeyVersion) -> str:
    if kv.key_size == 4096:
        return "sign_rsa4096"
    if kv.key_size == 3072:
        return "sign_rsa3072"
    return "sign"


class VaultApi:
    def __init__(self, app: EmulatorApp) -> None:
        self.app = app

    # -- helpers -------------------------------------------------------------------------
    def operation_name(self, request: Request) -> str:
        route = _route(request.method, request.path)
        return route.operation if route else "Unknown"

    def _challenge_header(self) -> str:
        authority = self.app.base_url.rstrip("/")
        return f'Bearer authorization="{authority}/{self.app.tenant_id}", resource="{_resource()}"'

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
                token.strip(), audiences=(_resource(), _resource() + "/")
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

    def _forbidden(self, principal: ident.Principal, route: _Route) -> VaultError:
        resource = f"/vaults/emulator/keys/{route.name}" if route.name else "/vaults/emulator"
        return VaultError(
            403,
            "Forbidden",
            "Caller is not authorized to perform action on resource.\r\n"
            f"The client '{principal.client_id}' with object id '{principal.object_id}' "
            f"does not have permission to perform action '{route.action}' on resource "
            f"'{resource}'.\r\nIf role assignments, deny assignments or role definitions were "
            "changed recently, please observe propagation time.\r\n"
            f"Caller: appid={principal.client_id};oid={principal.object_id}\r\n"
            f"Action: '{route.action}'\r\nResource: '{resource}'\r\nAssignment: (not found)\r\n",
            inner="ForbiddenByRbac",
        )

    def _throttle(self, cls: str) -> None:
        retry_after = self.app.limiter.acquire(cls)
        if retry_after is not None:
            raise _Throttled(retry_after)

    def throttled(self, request: Request, operation: str, retry_after: int) -> Response:
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
            if not ident.role_allows(principal.roles, route.action):
                raise self._forbidden(principal, route)
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
            tags = body.get("tags") or {}
            if len(tags) > 15:
                raise VaultError(400, "BadParameter", "A maximum of 15 tags is allowed.")
            self._throttle("hsm_create" if spec.is_hsm else "software_create")
            try:
                kv = store.create(name, body)
            except AlgorithmError as exc:
                raise VaultError(400, "BadParameter", str(exc)) from exc
            return 200, store.bundle(base, name, kv), kv.version, None

        if op == "KeyList":
            self._throttle("other")
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
            self._throttle("other")
            versions = store.versions(name)
            ids = [v.version for v in versions]
            page, next_link = self._page(request, ids, f"keys/{name}/versions")
            by_id = {v.version: v for v in versions}
            items = [store.item(base, name, by_id[i], with_version=True) for i in page]
            return 200, {"value": items, "nextLink": next_link}, None, None

        if op == "KeyGet":
            assert name is not None
            self._throttle("other")
            kv = store.get(name, route.version)
            return 200, store.bundle(base, name, kv), kv.version, None

        if op == "KeyUpdate":
            assert name is not None
            self._throttle("other")
            kv = store.update(name, route.version, body)
            return 200, store.bundle(base, name, kv), kv.version, None

        if op == "KeyDelete":
            assert name is not None
            self._throttle("other")
            deleted = store.delete(name)
            kv = deleted.versions[-1]
            out = {**store.deleted_fields(base, name, deleted), **store.bundle(base, name, kv)}
            return 200, out, kv.version, None

        if op in ("KeySign", "KeyVerify"):
            assert name is not None
            kv = store.get(name, route.version)
            self._throttle(_sign_class(kv))
            key_op = "sign" if op == "KeySign" else "verify"
            self._check_usable(kv, key_op)
            alg = str(body.get("alg") or "")
            try:
                if op == "KeySign":
                    digest = _b64url_decode(str(body.get("value") or ""))
                    sig = sign_digest(store.material(kv), kv.spec, alg, digest)
                    out = {"kid": f"{base}keys/{name}/{kv.version}", "value": b64url(sig)}
                else:
                    digest = _b64url_decode(str(body.get("digest") or ""))
                    sig = _b64url_decode(str(body.get("value") or ""))
                    out = {"value": verify_digest(store.material(kv), kv.spec, alg, digest, sig)}
            except AlgorithmError as exc:
                raise VaultError(400, "BadParameter", str(exc)) from exc
            return 200, out, kv.version, {"algorithm": alg}

        if op == "KeyListDeleted":
            self._throttle("other")
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
                        **store.item(base, n, d.versions[-1], with_version=False),
                        **store.deleted_fields(base, n, d),
                    }
                )
            return 200, {"value": items, "nextLink": next_link}, None, None

        if op == "KeyGetDeleted":
            assert name is not None
            self._throttle("other")
            d = store.get_deleted(name)
            kv = d.versions[-1]
            return (
                200,
                {**store.deleted_fields(base, name, d), **store.bundle(base, name, kv)},
                kv.version,
                None,
            )

        if op == "KeyPurge":
            assert name is not None
            self._throttle("other")
            store.purge(name)
            return 204, None, None, None

        if op == "KeyRecover":
            assert name is not None
            self._throttle("other")
            kv = store.recover(name)
            return 200, store.bundle(base, name, kv), kv.version, None

        raise VaultError(400, "BadParameter", f"Unsupported operation {op}")

    def _check_usable(self, kv: KeyVersion, key_op: str) -> None:
        now = self.app.clock.now()
        if not kv.enabled:
            raise VaultError(
                403,
                "Forbidden",
                f"Operation {key_op} is not allowed on a disabled key.",
                inner="KeyDisabled",
            )
        if kv.exp is not None and now > kv.exp:
            raise VaultError(
                403,
                "Forbidden",
                f"Operation {key_op} is not allowed on an expired key.",
                inner="KeyExpired",
            )
        if kv.nbf is not None and now < kv.nbf:
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
        # creation-ordered versions, all [0-9a-zA-Z-], so it needs no escaping.
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
    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


def _throttle_response(retry_after: int) -> Response:
    return Response(
        429,
        {
            "error": {
                "code": "Throttled",
                "message": "Request was not processed because too many requests were received. "
                f"Reason: VaultRequestTypeLimitReached. Retry after {retry_after} seconds.",
            }
        },
        {"Retry-After": str(retry_after)},
    )


def _resource() -> str:
    from .app import VAULT_RESOURCE

    return VAULT_RESOURCE
