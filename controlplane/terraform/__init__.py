"""Terraform provider `spirl/spirl` (plugin protocol 6, built on the `tf` package).

Implementation notes per module: controlplane/terraform/README.md. Nothing heavy is imported
here: `spirlctl` imports `install`.
"""

PROVIDER_ADDRESS = "registry.terraform.io/spirl/spirl"
PROVIDER_VERSION = "0.1.0"

__all__ = ["PROVIDER_ADDRESS", "PROVIDER_VERSION"]
