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
from controlplane.terraform.client import DEFAULT_RETRIES, DEFAULT_TIMEOUT_SECONDS, ApiClient
from controlplane.terraform.common import NotConfiguredError
from controlplane.terraform.settings import (
    ENV_CA_FILE,
    ENV_ENDPOINT,
    ENV_TOKEN,
    MAX_RETRIES,
    MAX_TIMEOUT_SECONDS,
    Problem,
    block_problems,
    resolve,
)
from controlplane.tls import TlsConfigError, client_verify, plain_http_warning

log = logging.getLogger(__name__)

__all__ = ["PROVIDER_ADDRESS", "PROVIDER_VERSION", "NotConfiguredError", "SpirlProvider"]


class SpirlProvider:
    """Implements tf.iface.Provider (a Protocol, so no inheritance needed)."""

    def __init__(self) -> None:
        self._client: ApiClient | None = None
        self._config_problem = "the provider was not configured"
        # (scope, scope id) -> trust domain name: objects are never renamed, so one lookup per
        # provider process is enough.
        self._trust_domains: dict[tuple[str, str], str] = {}

    # -- identity ---------------------------------------------------------------------------

    def full_name(self) -> str:
        return PROVIDER_ADDRESS

    def get_model_prefix(self) -> str:
        return "spirl_"

    def get_provider_schema(self, diags: Diagnostics) -> schema.Schema:
        return schema.Schema(
            description=(
                "Manage SPIFFE trust domains, their deployments and clusters, and their "
                "configuration (KeyManager, KeyLifecycle) on a spirl control plane."
            ),
            attributes=[
                schema.Attribute(
                    "endpoint",
                    types.String(),
                    optional=True,
                    description=(
                        "Base URL of the control plane, e.g. `https://cp.example.org:8443` "
                        f"(`http://` only on loopback). Default: `${ENV_ENDPOINT}`."
                    ),
                ),
                schema.Attribute(
                    "token",
                    types.String(),
                    optional=True,
                    sensitive=True,
                    description=(
                        "Bearer token (the admin role to write, viewer to read). "
                        f"Default: `${ENV_TOKEN}`."
                    ),
                ),
                schema.Attribute(
                    "request_timeout",
                    types.Number(),
                    optional=True,
                    description=(
                        "Seconds to wait for each answer of the control plane "
                        f"(1 to {MAX_TIMEOUT_SECONDS}). Default: {DEFAULT_TIMEOUT_SECONDS:g}."
                    ),
                ),
                schema.Attribute(
                    "max_retries",
                    types.Number(),
                    optional=True,
                    description=(
                        "How often a request answered with 429 (too many requests) or 503 "
                        "(unavailable) is retried, after `Retry-After` or a back-off of 0.5, 1, "
                        f"2, 4 ... seconds (0 to {MAX_RETRIES}). Default: {DEFAULT_RETRIES}."
                    ),
                ),
                schema.Attribute(
                    "ca_file",
                    types.String(),
                    optional=True,
                    description="PEM file of the CA that signed the control plane's TLS "
                    "certificate; only that CA is trusted. Default: "
                    f"`${ENV_CA_FILE}`, else the system's trust store.",
                ),
            ],
        )

    # -- configuration ----------------------------------------------------------------------

    @staticmethod
    def _report(diags: Diagnostics, problems: list[Problem]) -> None:
        for problem in problems:
            path = [problem.attribute] if problem.attribute else None
            diags.add_error(problem.summary, problem.detail, path=path)

    def validate_config(self, diags: Diagnostics, config: Config) -> None:
        self._report(diags, block_problems(config))

    def configure_provider(self, diags: Diagnostics, config: Config) -> None:
        settings, problems, missing = resolve(config, os.environ)
        self._client = None
        if problems:
            self._report(diags, problems)
            self._config_problem = "the provider configuration is invalid"
            return
        if settings is None:
            # Missing or not known until apply: only an error when a resource actually needs the
            # control plane, so plans without spirl objects still work.
            self._config_problem = "the provider has no " + " and no ".join(missing)
            return
        try:
            verify = client_verify(settings.ca_file)
        except TlsConfigError as exc:
            source = (
                "`ca_file` in the provider block"
                if settings.ca_file_from_block
                else f"${ENV_CA_FILE}"
            )
            diags.add_error(
                "Invalid ca_file",
                f"{source}: {exc}",
                path=["ca_file"] if settings.ca_file_from_block else None,
            )
            self._config_problem = "the provider configuration is invalid"
            return
        plain = plain_http_warning(settings.endpoint, "the token and your configuration")
        if plain:  # as spirlctl and spirl-tds warn
            diags.add_warning("Plain HTTP to another host", plain)
        self._client = ApiClient(
            settings.endpoint,
            settings.token,
            timeout=settings.timeout,
            retries=settings.retries,
            verify=verify,
        )
        log.info("configured for %s", settings.endpoint)
        # Terraform configures the provider right before it reads or plans: load httpx and the
        # document layer now, in parallel with its next calls, instead of in the first request.
        threading.Thread(target=_warm_up, args=(self._client,), daemon=True).start()

    @property
    def configured(self) -> bool:
        """Whether the control plane can be asked now (plan-time checks skip it otherwise)."""
        return self._client is not None

    @property
    def client(self) -> ApiClient:
        if self._client is None:
            raise NotConfiguredError(self._config_problem)
        return self._client

    def trust_domain_of(self, scope: str, scope_id: str) -> str:
        """Name of the trust domain a config scope belongs to (asks the control plane once)."""
        key = (scope, scope_id)
        if key not in self._trust_domains:
            from controlplane.terraform.lookup import scope_trust_domain_name

            self._trust_domains[key] = scope_trust_domain_name(self.client, scope, scope_id)
        return self._trust_domains[key]

    # -- types ------------------------------------------------------------------------------

    def get_resources(self) -> list[type[Resource]]:
        from controlplane.terraform.config_resources import (
            ClusterConfigResource,
            DeploymentConfigResource,
            TrustDomainConfigResource,
        )
        from controlplane.terraform.join_token import JoinTokenResource
        from controlplane.terraform.object_resources import (
            ClusterResource,
            TrustDomainDeploymentResource,
            TrustDomainResource,
        )
        from controlplane.terraform.section_resource import ConfigSectionResource

        return [
            TrustDomainResource,
            TrustDomainDeploymentResource,
            ClusterResource,
            TrustDomainConfigResource,
            DeploymentConfigResource,
            ClusterConfigResource,
            ConfigSectionResource,
            JoinTokenResource,
        ]

    def get_data_sources(self) -> list[type[DataSource]]:
        from controlplane.terraform.data_sources import (
            ClusterDataSource,
            DeploymentDataSource,
            EffectiveConfigDataSource,
            ServersDataSource,
            TrustDomainDataSource,
        )

        return [
            TrustDomainDataSource,
            DeploymentDataSource,
            ClusterDataSource,
            EffectiveConfigDataSource,
            ServersDataSource,
        ]

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
