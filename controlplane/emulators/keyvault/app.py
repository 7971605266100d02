"""The emulator application: the shared state with its routes, and request dispatch.

Routes: `/_emulator/...` (control API, never subject to faults), the fake Entra ID
(`/{tenant}/v2.0/.well-known/openid-configuration`, `/{tenant}/oauth2/v2.0/token`,
`/{tenant}/discovery/v2.0/keys`), an App Service-style managed identity endpoint
(`/msi/token`) and everything else as the Key Vault keys API. The Azure Instance Metadata
Service's token endpoint (`/metadata/identity/oauth2/token`) is served on a second, plain HTTP
listener, as IMDS is (see entra.py).
"""

from __future__ import annotations

import time

from .control import ControlApi
from .entra import EntraApi
from .httpd import Request, Response
from .limits import FaultDecision
from .state import EmulatorSettings, EmulatorState
from .vault import VaultApi

__all__ = ["EmulatorApp", "EmulatorSettings"]


class EmulatorApp(EmulatorState):
    def __init__(self, settings: EmulatorSettings) -> None:
        super().__init__(settings)
        self.vault = VaultApi(self)
        self.entra = EntraApi(self)
        self.control = ControlApi(self, self.entra)

    def __call__(self, request: Request) -> Response:
        if request.path.startswith("/_emulator/"):
            return self.control.handle(request)
        is_entra = self.entra.matches(request)
        operation = "Token" if is_entra else self.vault.operation_name(request)
        decision, failed = self._fault("entra" if is_entra else "vault", operation)
        if failed is not None:
            return failed
        if is_entra:
            return self.entra.handle(request)
        if decision.action == "throttle":
            return self.vault.throttled(request, operation, decision.retry_after)
        return self.vault.handle(request, operation)

    def serve_imds(self, request: Request) -> Response:
        """The plain HTTP listener: the Instance Metadata Service's token endpoint only."""
        _, failed = self._fault("entra", "Token")
        return failed if failed is not None else self.entra.imds(request)

    def _fault(self, target: str, operation: str) -> tuple[FaultDecision, Response | None]:
        decision = self.faults.decide(target, operation)
        if decision.delay_seconds:
            time.sleep(decision.delay_seconds)
        if decision.action == "reset":
            return decision, Response(0, reset=True)
        if decision.action == "unavailable":
            return decision, Response(
                503,
                {"error": {"code": "ServiceUnavailable", "message": "The service is unavailable."}},
                {"Retry-After": "1"},
            )
        return decision, None
