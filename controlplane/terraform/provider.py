"""The `spirl/spirl` provider: configuration and the list of resources and data sources."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from tf import schema, types
from tf.iface import Config, DataSource, Resource
from tf.utils import Diagnostics

from controlplane.terraform import PROVIDER_ADDRESS, PROVIDER_VERSION
from controlplane.terraform.client import ApiClient
from controlplane.tls import CA_FILE_ENV, TlsConfigError, client_verify

log = logging.getLogger(__name__)

ENV_ENDPOINT = "SPIRL_ENDPOINT"
ENV_TOKEN = "SPIRL_TOKEN"


__all__ = ["PROVIDER_ADDRESS", "PROVIDER_VERSION", "NotConfiguredError", "SpirlProvider"]


class NotConfiguredError(RuntimeError):
    pass


class SpirlProvider:
    """Implements tf.iface.Provider (a Protocol, so no inheritance needed)."""

    def __init__(self) -> None:
        self._client: ApiClient | None = None
        self._config_problem = "the provider was not configured"

    # -- identity ---------------------------------------------------------------------------

    def full_name(self) -> str:
        return PROVIDER_ADDRESS

    def get_model_prefix(self) -> str:
        return "spirl_"

    def get_provider_schema(self, diags: Diagnostics) -> schema.Schema:
        return schema.Schema(
            description="Manage SPIFFE trust domains and their KeyManager configuration on a spirl control plane.",
            attributes=[
                schema.Attribute(
                    "endpoint",
                    types.String(),
                    optional=True,
                    description=f"Control plane base URL, e.g. `https://cp.example.org:8443`. Default: `${ENV_ENDPOINT}`.",
                ),
                schema.Attribute(
                    "token",
                    types.String(),
                    optional=True,
                    sensitive=True,
                    description=f"Bearer token (admin role to write). Default: `${ENV_TOKEN}`.",
                ),
                schema.Attribute(
                    "ca_file",
                    types.String(),
                    optional=True,
                    description="PEM file of the CA that signed the control plane's TLS "
                    "certificate; only that CA is trusted. Default: "
                    f"`${CA_FILE_ENV}`, else the system's trust store.",
                ),
            ],
        )

    # -- configuration ----------------------------------------------------------------------

    @staticmethod
    def _setting(config: Config | None, name: str, env: str) -> Any:
        value = (config or {}).get(name)
        if value is None:
            return os.environ.get(env) or None
        return value

    def validate_config(self, diags: Diagnostics, config: Config) -> None:
        endpoint = (config or {}).get("endpoint")
        if isinstance(endpoint, str) and not endpoint.startswith(("http://", "https://")):
            diags.add_error(
                "Invalid endpoint",
                f"endpoint must be an http:// or https:// URL, got {endpoint!r}",
                path=["endpoint"],
            )

    def configure_provider(self, diags: Diagnostics, config: Config) -> None:
        endpoint = self._setting(config, "endpoint", ENV_ENDPOINT)
        token = self._setting(config, "token", ENV_TOKEN)
        if not isinstance(endpoint, str) or not isinstance(token, str):
            # Unknown values (from other resources) or missing: only an error when a resource
            # actually needs the control plane, so `terraform validate`-like flows still work.
            missing = [
                f"{name} (or ${env})"
                for name, env, value in (
                    ("endpoint", ENV_ENDPOINT, endpoint),
                    ("token", ENV_TOKEN, token),
                )
                if not isinstance(value, str)
            ]
            self._config_problem = "the provider has no " + " and no ".join(missing)
            self._client = None
            return
        if not endpoint.startswith(("http://", "https://")):
            diags.add_error(
                "Invalid endpoint",
                f"endpoint must be an http:// or https:// URL, got {endpoint!r}",
                path=["endpoint"],
            )
            return
        ca_file = self._setting(config, "ca_file", CA_FILE_ENV)
        try:
            verify = client_verify(ca_file if isinstance(ca_file, str) else None)
        except TlsConfigError as exc:
            diags.add_error("Invalid ca_file", str(exc), path=["ca_file"])
            return
        self._client = ApiClient(endpoint, token, verify=verify)
        log.info("configured for %s", endpoint)
        # Terraform configures the provider right before it reads or plans: load httpx and the
        # document layer now, in parallel with its next calls, instead of in the first request.
        threading.Thread(target=_warm_up, args=(self._client,), daemon=True).start()

    @property
    def client(self) -> ApiClient:
        if self._client is None:
            raise NotConfiguredError(self._config_problem)
        return self._client

    # -- types ------------------------------------------------------------------------------

    def get_resources(self) -> list[type[Resource]]:
        from controlplane.terraform.config_resources import (
            ClusterConfigResource,
            DeploymentConfigResource,
        )
        from controlplane.terraform.object_resources import (
            ClusterResource,
            TrustDomainDeploymentResource,
            TrustDomainResource,
        )

        return [
            TrustDomainResource,
            TrustDomainDeploymentResource,
            ClusterResource,
            ClusterConfigResource,
            DeploymentConfigResource,
        ]

    def get_data_sources(self) -> list[type[DataSource]]:
        from controlplane.terraform.data_sources import ClusterDataSource, TrustDomainDataSource

        return [TrustDomainDataSource, ClusterDataSource]

    def get_functions(self) -> list[Any]:
        return []

    # tf calls klass(provider) for every request; keep these explicit for readers.
    def new_resource(self, klass: type[Any]) -> Any:
        return klass(self)

    def new_data_source(self, klass: type[Any]) -> Any:
        return klass(self)

    def new_function(self, klass: type[Any]) -> Any:
        return klass(self)


def _warm_up(client: ApiClient) -> None:
    try:
        client.warm_up()
    except Exception:  # only an optimisation: the real request reports any error
        log.debug("warm-up failed", exc_info=True)
