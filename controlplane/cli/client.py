"""HTTP client for the control plane API, used by spirlctl (and usable from scripts)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from controlplane.files import ensure_private_dir, write_private_atomically
from controlplane.tls import CA_FILE_ENV, TlsConfigError, client_verify, verification_failure

ENDPOINT_ENV = "SPIRL_ENDPOINT"
TOKEN_ENV = "SPIRL_TOKEN"


class CliError(Exception):
    """One clear line for the user; spirlctl prints it and exits 1."""


class ApiError(CliError):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        super().__init__(body.get("message") or f"HTTP {status}")

    @property
    def code(self) -> str:
        return str(self.body.get("error", ""))


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "spirl" / "config.json"


@dataclass(frozen=True)
class Credentials:
    endpoint: str
    token: str | None
    ca_file: str | None = None


def load_credentials(
    endpoint: str | None = None, token: str | None = None, ca_file: str | None = None
) -> Credentials:
    """Flags beat environment variables, which beat the file `spirlctl login` wrote."""
    saved: dict[str, Any] = {}
    path = config_path()
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read {path}: {exc}; run `spirlctl login` again") from exc
    endpoint = endpoint or os.environ.get(ENDPOINT_ENV) or saved.get("endpoint")
    token = token or os.environ.get(TOKEN_ENV) or saved.get("token")
    if not endpoint:
        raise CliError(
            f"no control plane endpoint: set {ENDPOINT_ENV} or run `spirlctl login --endpoint URL`"
        )
    ca_file = ca_file or os.environ.get(CA_FILE_ENV) or saved.get("ca_file")
    return Credentials(endpoint=endpoint.rstrip("/"), token=token, ca_file=ca_file)


def save_credentials(creds: Credentials) -> Path:
    path = config_path()
    ensure_private_dir(path.parent)
    saved = {"endpoint": creds.endpoint, "token": creds.token}
    if creds.ca_file:
        saved["ca_file"] = str(Path(creds.ca_file).resolve())
    write_private_atomically(path, json.dumps(saved).encode())
    return path


class ApiClient:
    def __init__(self, creds: Credentials, timeout: float = 30.0) -> None:
        headers = {"User-Agent": "spirlctl"}
        if creds.token:
            headers["Authorization"] = f"Bearer {creds.token}"
        self.endpoint = creds.endpoint
        try:
            verify = client_verify(creds.ca_file)
        except TlsConfigError as exc:
            raise CliError(f"{exc} (from --ca-file, ${CA_FILE_ENV} or `spirlctl login`)") from exc
        self._http = httpx.Client(
            base_url=creds.endpoint, headers=headers, timeout=timeout, verify=verify
        )

    def close(self) -> None:
        self._http.close()

    def request(
        self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, json=json_body, params=clean)
        except httpx.TimeoutException as exc:
            raise CliError(f"control plane at {self.endpoint} did not answer in time") from exc
        except httpx.HTTPError as exc:
            refused = verification_failure(exc)
            if refused is not None:
                raise CliError(
                    f"the control plane at {self.endpoint} presented a certificate this client "
                    f"does not trust ({refused}); pass the CA that signed it with --ca-file or "
                    f"${CA_FILE_ENV}"
                ) from exc
            raise CliError(f"cannot reach the control plane at {self.endpoint}: {exc}") from exc
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = {"message": f"HTTP {response.status_code}: {response.text[:200]}"}
        if response.status_code >= 400:
            if response.status_code == 401:
                body["message"] = (
                    f"not authenticated: {body.get('message', '')} "
                    f"(set {TOKEN_ENV} or run `spirlctl login`)"
                ).strip()
            raise ApiError(response.status_code, body)
        return body

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json_body=body if body is not None else {})

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json_body=body)

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params=params)
