"""Start a real control plane process for end-to-end tests."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from controlplane.emulators.tls import TlsFiles
from controlplane.tls import client_verify

from support.processes import RunningProcess, script, start_process


@dataclass
class ControlPlane:
    process: RunningProcess
    url: str
    admin_token: str
    data_dir: Path
    database_url: str | None
    ca_file: Path | None = None  # set when serving TLS

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
            verify=client_verify(self.ca_file),
        )

    def env(self) -> dict[str, str]:
        """Environment for spirlctl and the Terraform provider."""
        env = {"SPIRL_ENDPOINT": self.url, "SPIRL_TOKEN": self.admin_token}
        if self.ca_file is not None:
            env["SPIRL_CA_FILE"] = str(self.ca_file)
        return env

    def spirlctl(
        self,
        *args: str,
        input_text: str | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """spirlctl against this control plane (`env`: instead of its endpoint/token/CA);
        no SPIRL_* variable of the test's own environment reaches it."""
        import os

        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SPIRL_")}
        result = subprocess.run(
            [script("spirlctl"), *args],
            capture_output=True,
            text=True,
            env={**inherited, **(env if env is not None else self.env())},
            input=input_text,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"spirlctl {' '.join(args)} failed ({result.returncode}): {result.stderr}"
            )
        return result

    def spirlctl_json(self, *args: str) -> Any:
        return json.loads(self.spirlctl(*args, "-o", "json").stdout)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _db_args(data_dir: Path, database_url: str | None) -> list[str]:
    args = ["--data-dir", str(data_dir)]
    if database_url:
        args += ["--database-url", database_url]
    return args


def create_admin_token(data_dir: Path, database_url: str | None = None) -> str:
    return create_token(data_dir, "admin", database_url)


def create_token(data_dir: Path, role: str, database_url: str | None = None) -> str:
    """`spirl-controlplane token create --role ROLE` (migrating first); the token it printed."""
    result = subprocess.run(
        [
            script("spirl-controlplane"),
            "token",
            "create",
            "--role",
            role,
            "--migrate",
            *_db_args(data_dir, database_url),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def start_control_plane(
    tmp_path: Path,
    *,
    database_url: str | None = None,
    admin_token: str | None = None,
    extra_args: list[str] | None = None,
    name: str = "controlplane",
    tls: TlsFiles | None = None,
) -> ControlPlane:
    """Migrate, create an admin token, and start `spirl-controlplane serve` on a free loopback port
    (HTTPS with `tls`'s server certificate when given)."""
    data_dir = tmp_path / f"{name}-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    token = admin_token or create_admin_token(data_dir, database_url)
    process = start_process(
        [
            script("spirl-controlplane"),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--migrate",
            *_db_args(data_dir, database_url),
            *(["--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file)] if tls else []),
            *(extra_args or []),
        ],
        log_path=tmp_path / f"{name}.log",
    )
    return ControlPlane(
        process=process,
        url=process.announcement["url"],
        admin_token=token,
        data_dir=data_dir,
        database_url=database_url,
        ca_file=tls.ca_file if tls else None,
    )
