"""A loopback Azure Key Vault (keys API) + Entra ID emulator for tests and the demo.

Public API: `start_emulator` / `EmulatorProcess` / `ControlClient` (process.py), the
`spirl-keyvault-emulator` command (cli.py), and the built-in RBAC role names below.
"""

from .identity import (
    ROLE_ADMINISTRATOR,
    ROLE_CRYPTO_OFFICER,
    ROLE_CRYPTO_USER,
    ROLE_READER,
)
from .process import ControlClient, EmulatorError, EmulatorProcess, start_emulator

__all__ = [
    "ROLE_ADMINISTRATOR",
    "ROLE_CRYPTO_OFFICER",
    "ROLE_CRYPTO_USER",
    "ROLE_READER",
    "ControlClient",
    "EmulatorError",
    "EmulatorProcess",
    "start_emulator",
]
