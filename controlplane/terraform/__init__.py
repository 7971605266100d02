"""Terraform provider `spirl/spirl` (plugin protocol 6, built on the `tf` package).

Modules: main (entry point), provider (configuration), object_resources, config_resources,
data_sources, sections (YAML map comparison/validation), client (HTTP API), install
(`install_provider`). Nothing heavy is imported here: `spirlctl` imports `install`.
"""

PROVIDER_ADDRESS = "registry.terraform.io/spirl/spirl"
PROVIDER_VERSION = "0.1.0"

__all__ = ["PROVIDER_ADDRESS", "PROVIDER_VERSION"]
