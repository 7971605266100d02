"""Start real processes that announce themselves with one JSON line on stdout; stop them by pid."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.processes import start_announced, stop_process

VENV_BIN = Path(sys.executable).parent


def script(name: str) -> str:
    """Path of one of our console scripts in the running virtualenv."""
    path = VENV_BIN / name
    if not path.exists():
        raise RuntimeError(f"console script {name} is not installed in {VENV_BIN}; run `make test`")
    return str(path)


@dataclass
class RunningProcess:
    proc: Any  # subprocess.Popen[bytes]
    announcement: dict[str, Any]
    log_path: Path

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int:
        return stop_process(self.proc, timeout)

    def __enter__(self) -> RunningProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_process(
    cmd: list[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    ready_timeout: float = 30.0,
) -> RunningProcess:
    """Run `cmd`, wait for its first stdout line (a JSON object) and return the live process."""
    proc, announcement = start_announced(
        cmd, log_path=log_path, env=env, cwd=cwd, timeout=ready_timeout
    )
    return RunningProcess(proc=proc, announcement=announcement, log_path=log_path)
