"""The emulator's control API under `/_emulator/`, guarded by the control token.

GET  /_emulator/health                    liveness, sku
GET|POST|DELETE /_emulator/faults         list / add / clear injected faults
GET|POST /_emulator/principals            list / create-or-update a principal
DELETE /_emulator/principals/{client_id}
POST /_emulator/federated-token           issue a Workload Identity assertion
GET  /_emulator/msi                       managed identity endpoint and its header secret
GET|POST /_emulator/clock                 read / set or advance the key clock offset
GET  /_emulator/audit?since=N             audit log events
POST /_emulator/sku                       switch tier (premium|standard)
GET|POST /_emulator/limits                read / change service limits (and whether 429s carry
                                          Retry-After)
GET|POST /_emulator/roles                 list role definitions / define a custom role
GET|POST /_emulator/permission-model      read / set "rbac" or "access-policy"
GET|POST /_emulator/network               read / set the firewall (default_action, ip_rules)
GET|POST /_emulator/soft-delete           read / set retention_days, purge_protection,
                                          delete_delay, recover_delay (seconds)
"""

from __future__ import annotations

import hmac
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TypeVar

from .httpd import Request, Response
from .identity import RoleDefinition
from .limits import Fault, Limits
from .network import NetworkRules
from .store import SoftDeleteSettings

if TYPE_CHECKING:
    from .entra import EntraApi
    from .state import EmulatorState

__all__ = ["ControlApi"]


def _error(status: int, message: str) -> Response:
    return Response(
        status, {"error": {"code": "BadRequest" if status == 400 else "Error", "message": message}}
    )


S = TypeVar("S", Limits, SoftDeleteSettings)


def _changed(settings: S, body: dict[str, Any], what: str) -> S:
    """A copy of `settings` with the fields in `body` changed (ValueError for unknown ones;
    the dataclass checks the values)."""
    current = asdict(settings)
    unknown = set(body) - set(current)
    if unknown:
        raise ValueError(f"unknown {what} fields: {sorted(unknown)}")
    return type(settings)(**{**current, **body})


class ControlApi:
    def __init__(self, app: EmulatorState, entra: EntraApi) -> None:
        self.app = app
        self.entra = entra  # mints the federated assertions a test hands to a workload

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        expected = self.app.settings.control_token
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), expected)

    def handle(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(
                401, {"error": {"code": "Unauthorized", "message": "control token required"}}
            )
        parts = request.path.strip("/").split("/")[1:]
        try:
            body = request.json() if request.method in ("POST", "PUT", "PATCH") else {}
        except ValueError:
            return _error(400, "body must be a JSON object")
        try:
            return self._route(request.method, parts, body, request)
        except (ValueError, TypeError, KeyError) as exc:
            return _error(400, str(exc))

    def _route(
        self, method: str, parts: list[str], body: dict[str, Any], request: Request
    ) -> Response:
        app = self.app
        what = parts[0] if parts else ""
        if what == "health" and method == "GET":
            return Response(200, {"ok": True, "sku": app.sku, "tenant_id": app.tenant_id})
        if what == "faults":
            if method == "GET":
                return Response(200, {"faults": app.faults.list()})
            if method == "POST":
                fault = Fault.from_json(body)
                app.faults.add(fault)
                return Response(201, {"fault": fault.to_json()})
            if method == "DELETE":
                app.faults.clear()
                return Response(204)
        if what == "principals":
            if method == "GET" and len(parts) == 1:
                return Response(
                    200, {"principals": [p.public_view() for p in app.principals.all()]}
                )
            if method == "POST" and len(parts) == 1:
                client_id = str(body["client_id"])
                subjects = body.get("federated_subjects")
                if subjects is None and body.get("federated_subject") is not None:
                    subjects = [body["federated_subject"]]
                p = app.principals.upsert(
                    client_id,
                    roles=body.get("roles"),
                    key_permissions=body.get("key_permissions"),
                    client_secret=body.get("client_secret"),
                    federated_subjects=subjects,
                    managed_identity=body.get("managed_identity"),
                )
                return Response(200, p.public_view())
            if method == "DELETE" and len(parts) == 2:
                found = app.principals.remove(parts[1])
                return Response(204) if found else _error(404, "no such principal")
        if what == "msi" and method == "GET":
            return Response(200, {"endpoint": f"{app.base_url}msi/token", "header": app.msi_header})
        if what == "federated-token" and method == "POST":
            subject = body.get("subject")
            if subject is None:
                principal = app.principals.get(str(body.get("client_id", "")))
                if principal is None or not principal.federated_subjects:
                    return _error(404, "no such principal with a federated subject")
                subject = principal.federated_subjects[0]
            token = self.entra.issue_federated_assertion(
                str(subject), int(body.get("ttl_seconds", 3600))
            )
            return Response(200, {"token": token, "subject": subject})
        if what == "clock":
            if method == "POST":
                if "offset_seconds" in body:
                    app.clock.set_offset(float(body["offset_seconds"]))
                if "advance_seconds" in body:
                    app.clock.advance(float(body["advance_seconds"]))
                app.store.save()
            return Response(200, {"offset_seconds": app.clock.offset, "now": app.clock.now()})
        if what == "audit" and method == "GET":
            since = int(request.param("since") or 0)
            return Response(200, {"events": app.audit.read(since)})
        if what == "sku" and method == "POST":
            app.sku = str(body["sku"])
            return Response(200, {"sku": app.sku})
        if what == "limits":
            if method == "POST":
                app.set_limits(_changed(app.limiter.limits, body, "limit"))
            return Response(200, asdict(app.limiter.limits))
        if what == "roles":
            if method == "POST":
                role = app.principals.define_role(RoleDefinition.from_json(body))
                return Response(200, role.to_json())
            return Response(200, {"roles": app.principals.roles()})
        if what == "permission-model":
            if method == "POST":
                app.permission_model = str(body["model"])
            return Response(200, {"model": app.permission_model})
        if what == "network":
            if method == "POST":
                app.network = NetworkRules(
                    str(body.get("default_action", "Allow")), tuple(body.get("ip_rules") or ())
                )
            rules = app.network
            return Response(
                200, {"default_action": rules.default_action, "ip_rules": list(rules.ip_rules)}
            )
        if what == "soft-delete":
            if method == "POST":
                app.store.soft_delete = _changed(app.store.soft_delete, body, "soft-delete")
            return Response(200, asdict(app.store.soft_delete))
        return _error(404, f"no control route {method} /{'/'.join(['_emulator', *parts])}")
