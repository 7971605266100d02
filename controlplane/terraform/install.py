"""Install the provider where Terraform finds it without a registry or a CLI config file.

Terraform's implied local mirror directories include `~/.terraform.d/plugins`; a provider in the
unpacked layout `HOST/NAMESPACE/TYPE/VERSION/OS_ARCH/terraform-provider-TYPE_vVERSION` is used by
`terraform init` offline.

The executable is a small shell wrapper whose bytes are the same for every install of a version:
`.terraform.lock.hcl` records a hash of the `OS_ARCH` folder, so a wrapper naming the Python
environment it came from would break every lock file at the next install from another
environment (or machine). The environment to run is recorded next to that folder instead, in
`VERSION/python`, outside what the lock hashes; `$SPIRL_PROVIDER_PYTHON` overrides it. Terraform
links the mirror folder into `.terraform/providers`, and the wrapper follows that link
(`cd -P`) to find the record. When the recorded environment is gone, the wrapper says to
re-install; re-installing rewrites the record and leaves the wrapper (and lock files) as they are.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from controlplane.terraform import PROVIDER_VERSION

HOSTNAME = "registry.terraform.io"
NAMESPACE = "spirl"
TYPE = "spirl"
EXECUTABLE = f"terraform-provider-{TYPE}_v{PROVIDER_VERSION}"
PYTHON_RECORD = "python"
PYTHON_ENV = "SPIRL_PROVIDER_PYTHON"

_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "386",
    "i686": "386",
}

# Set by Terraform in the environment of every provider it starts (go-plugin's magic cookie).
COOKIE_ENV = "TF_PLUGIN_MAGIC_COOKIE"
# How long a provider that cannot start waits for Terraform to read its message and stop it.
LINGER_SECONDS = 10

# No absolute path in here (see the module docstring). A message that cannot start goes to
# stdout too: Terraform shows the plugin's first stdout line when the handshake fails. Started by
# Terraform, the wrapper then waits to be stopped instead of exiting: go-plugin 1.6.0 (Terraform
# 1.11) closes a plugin's stdout when the process exits, and a line not yet read is lost (the user
# would see "Failed to read any lines from plugin's stdout"). Terraform stops a plugin whose first
# line is not a handshake at once, so the wait costs nothing; LINGER_SECONDS bounds it.
WRAPPER = f"""#!/bin/sh
# terraform-provider-spirl v{PROVIDER_VERSION}, written by `spirlctl terraform install-provider`.
# The same bytes for every install of this version, so .terraform.lock.hcl stays valid when the
# provider is re-installed. It runs the Python environment named by ${PYTHON_ENV}, else the one
# recorded by the last install in ../{PYTHON_RECORD} (next to this folder).
here=$(cd -P "$(dirname "$0")" && pwd)
python=${{{PYTHON_ENV}:-}}
if [ -z "$python" ] && [ -r "$here/../{PYTHON_RECORD}" ]; then
  python=$(cat "$here/../{PYTHON_RECORD}")
fi
if [ -z "$python" ] || [ ! -x "$python" ]; then
  message="terraform-provider-spirl: the Python environment to run (${{python:-none recorded}}) \
is missing: run 'spirlctl terraform install-provider' from the environment where spirl is \
installed, or set {PYTHON_ENV}"
  echo "$message" >&2
  echo "$message"
  if [ -n "${{{COOKIE_ENV}:-}}" ]; then
    exec sleep {LINGER_SECONDS}
  fi
  exit 1
fi
exec "$python" -m controlplane.terraform.main "$@"
"""


def platform_dir() -> str:
    """Terraform's OS_ARCH name for this machine, e.g. `linux_amd64`."""
    system = platform.system().lower()
    machine = platform.machine().lower()
    return f"{system}_{_ARCH.get(machine, machine)}"


def default_plugin_root() -> Path:
    return Path.home() / ".terraform.d" / "plugins"


def _write(path: Path, text: str, mode: int) -> None:
    # Write then rename, so a Terraform run in progress never sees a half-written file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def install_provider(plugin_root: Path | None = None, python: str | None = None) -> Path:
    """Write the wrapper under `plugin_root` (default `~/.terraform.d/plugins`) and record
    `python` (default: this interpreter) as the environment it runs; return the wrapper's path."""
    root = plugin_root if plugin_root is not None else default_plugin_root()
    version_dir = root / HOSTNAME / NAMESPACE / TYPE / PROVIDER_VERSION
    target_dir = version_dir / platform_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / EXECUTABLE
    _write(version_dir / PYTHON_RECORD, (python or sys.executable) + "\n", 0o644)
    _write(target, WRAPPER, 0o755)
    return target
