"""A fake Microsoft Entra ID: tenant OIDC discovery, the v2.0 token endpoint, and the
managed identity token endpoints.

Supports the client-credentials grant with a client secret or a client assertion
(a JWT bearer, which is how Workload Identity works: the federated token file's JWT
is sent as the assertion and must carry a subject registered for the client).

Managed identities get tokens from two endpoints: App Service's (`/msi/token`,
`X-IDENTITY-HEADER`) on the HTTPS listener, and the Azure Instance Metadata Service's
(`GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=...`, header
`Metadata: true`) on the plain HTTP listener, as on VMs and AKS nodes. The unmodified SDK
reaches the latter through `AZURE_POD_IDENTITY_AUTHORITY_HOST` (azure-identity `ImdsCredential`,
msal `_obtain_token_on_azure_vm`). Its answers follow learn.microsoft.com "How to use managed
identities for Azure resources on an Azure VM to acquire an access token" (HTTP response
reference): 400 `bad_request_102` "Required metadata header not specified", 400
`invalid_request` "Identity not found", 200 with `expires_in` as a string.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from .httpd import Request, Response
from .state import FEDERATION_AUDIENCE
from .tokens import TokenError

if TYPE_CHECKING:
    from .state import EmulatorState

__all__ = ["EntraApi"]

ACCESS_TOKEN_TTL = 3600
IMDS_TOKEN_PATH = ["metadata", "identity", "oauth2", "token"]
_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _oauth_error(status: int, error: str, description: str, code: int) -> Response:
    return Response(
        status,
        {
            "error": error,
            "error_description": description,
            "error_codes": [code],
            "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
        },
    )


def _imds_error(status: int, error: str, description: str) -> Response:
    return Response(status, {"error": error, "error_description": description})


class EntraApi:
    def __init__(self, app: EmulatorState) -> None:
        self.app = app

    @staticmethod
    def _parts(request: Request) -> list[str]:
        return request.path.strip("/").split("/")

    def matches(self, request: Request) -> bool:
        parts = self._parts(request)
        if parts in (["msi", "token"], IMDS_TOKEN_PATH):
            return True
        return len(parts) >= 3 and (
            parts[1:] == ["v2.0", ".well-known", "openid-configuration"]
            or parts[1:] == ["oauth2", "v2.0", "token"]
            or parts[1:] == ["discovery", "v2.0", "keys"]
        )

    def handle(self, request: Request) -> Response:
        parts = self._parts(request)
        if parts == ["msi", "token"]:
            return self._managed_identity_token(request)
        if parts == IMDS_TOKEN_PATH:
            return _imds_error(404, "invalid_request", "IMDS is served on the HTTP listener")
        tenant = parts[0]
        if tenant != self.app.tenant_id:
            return _oauth_error(
                400, "invalid_request", f"AADSTS90002: Tenant '{tenant}' not found.", 90002
            )
        if parts[1] == "v2.0" and request.method == "GET":
            return Response(200, self._openid_configuration())
        if parts[1] == "discovery" and request.method == "GET":
            return Response(200, self.app.signer.jwks())
        if parts[1] == "oauth2" and request.method == "POST":
            return self._token(request.form())
        return _oauth_error(405, "invalid_request", "Method not allowed.", 900561)

    def _openid_configuration(self) -> dict[str, Any]:
        base = f"{self.app.base_url}{self.app.tenant_id}"
        return {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "tenant_region_scope": "EMU",
            "cloud_instance_name": "emulator",
        }

    def _token(self, form: dict[str, str]) -> Response:
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(
                400,
                "unsupported_grant_type",
                "AADSTS70003: The app requested an unsupported grant type.",
                70003,
            )
        client_id = form.get("client_id", "")
        principal = self.app.principals.get(client_id)
        if principal is None:
            return _oauth_error(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the "
                f"directory '{self.app.tenant_id}'.",
                700016,
            )
        if "client_secret" in form:
            if not principal.check_secret(form["client_secret"]):
                return _oauth_error(
                    401,
                    "invalid_client",
                    "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent "
                    f"in the request is the client secret value for app '{client_id}'.",
                    7000215,
                )
        elif form.get("client_assertion_type") == _ASSERTION_TYPE and "client_assertion" in form:
            try:
                claims = self.app.signer.verify(
                    form["client_assertion"], audiences=(FEDERATION_AUDIENCE,)
                )
            except TokenError as exc:
                return _oauth_error(
                    400,
                    "invalid_client",
                    f"AADSTS700024: Client assertion is not valid: {exc}.",
                    700024,
                )
            if (
                claims.get("iss") != self.app.federation_issuer
                or claims.get("sub") not in principal.federated_subjects
            ):
                return _oauth_error(
                    400,
                    "invalid_client",
                    "AADSTS70021: No matching federated identity record found for presented "
                    f"assertion. Assertion Issuer: '{claims.get('iss')}'. Assertion Subject: "
                    f"'{claims.get('sub')}'.",
                    70021,
                )
        else:
            return _oauth_error(
                401,
                "invalid_client",
                "AADSTS7000218: The request body must contain the following parameter: "
                "'client_assertion' or 'client_secret'.",
                7000218,
            )
        scopes = form.get("scope", "").split()
        resource_scopes = [s for s in scopes if s.endswith("/.default")]
        if len(resource_scopes) != 1:
            return _oauth_error(
                400,
                "invalid_scope",
                "AADSTS1002012: The provided value for scope is not valid.",
                1002012,
            )
        resource = resource_scopes[0][: -len("/.default")]
        return Response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": ACCESS_TOKEN_TTL - 1,
                "ext_expires_in": ACCESS_TOKEN_TTL - 1,
                "access_token": self._access_token(principal, resource),
            },
        )

    def _managed_identity_token(self, request: Request) -> Response:
        """App Service-style managed identity endpoint (IDENTITY_ENDPOINT + IDENTITY_HEADER)."""
        import hmac

        header = request.headers.get("X-IDENTITY-HEADER") or ""
        if not hmac.compare_digest(header, self.app.msi_header):
            return Response(401, {"statusCode": 401, "message": "invalid X-IDENTITY-HEADER"})
        resource = (request.param("resource") or "").removesuffix("/.default")
        if not resource:
            return Response(400, {"statusCode": 400, "message": "resource is required"})
        principal = self.app.principals.managed(request.param("client_id"))
        if principal is None:
            return Response(
                400, {"statusCode": 400, "message": "no managed identity found for the request"}
            )
        token = self._access_token(principal, resource)
        expires_on = int(time.time()) + ACCESS_TOKEN_TTL
        return Response(
            200,
            {
                "access_token": token,
                "expires_on": str(expires_on),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": principal.client_id,
            },
        )

    def imds(self, request: Request) -> Response:
        """The Instance Metadata Service's managed identity token endpoint (plain HTTP)."""
        if self._parts(request) != IMDS_TOKEN_PATH:
            return _imds_error(404, "invalid_request", "Unknown IMDS path")
        if request.method != "GET":
            return _imds_error(405, "invalid_request", "Method not allowed")
        if request.headers.get("Metadata") != "true":
            return _imds_error(400, "bad_request_102", "Required metadata header not specified")
        if not request.param("api-version"):
            return _imds_error(400, "invalid_request", "Required parameter api-version is missing")
        resource = (request.param("resource") or "").removesuffix("/.default")
        if not resource:
            return _imds_error(400, "invalid_request", "Required parameter resource is missing")
        principal = self.app.principals.managed(
            request.param("client_id"), request.param("object_id")
        )
        if principal is None:
            return _imds_error(400, "invalid_request", "Identity not found")
        now = int(time.time())
        return Response(
            200,
            {
                "access_token": self._access_token(principal, resource),
                "client_id": principal.client_id,
                "expires_in": str(ACCESS_TOKEN_TTL),
                "expires_on": str(now + ACCESS_TOKEN_TTL),
                "ext_expires_in": str(ACCESS_TOKEN_TTL),
                "not_before": str(now),
                "resource": resource,
                "token_type": "Bearer",
            },
        )

    def _access_token(self, principal: Any, resource: str) -> str:
        now = int(time.time())  # real time: MSAL checks expiry against the real clock
        claims = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{self.app.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + ACCESS_TOKEN_TTL,
            "appid": principal.client_id,
            "azp": principal.client_id,
            "oid": principal.object_id,
            "sub": principal.object_id,
            "tid": self.app.tenant_id,
            "idtyp": "app",
            "ver": "1.0",
        }
        return self.app.signer.sign(claims)

    def issue_federated_assertion(self, subject: str, ttl_seconds: int = 3600) -> str:
        """A token standing in for a Kubernetes service account token (the federated credential)."""
        now = int(time.time())
        return self.app.signer.sign(
            {
                "iss": self.app.federation_issuer,
                "sub": subject,
                "aud": [FEDERATION_AUDIENCE],
                "iat": now,
                "nbf": now,
                "exp": now + ttl_seconds,
            }
        )
