"""Start real processes that announce themselves with one JSON line on stdout; stop them by pid."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent


def script(name: str) -> str:
    """Path of one of our console scripts in the running virtualenv."""
    path = VENV_BIN / name
    if not path.exists():
        raise RuntimeError(f"console script {name} is not installed in {VENV_BIN}; run `make test`")
    return str(path)


@dataclass
class RunningProcess:
    proc: subprocess.Popen[bytes]
    announcement: dict[str, Any]
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode

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
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=full_env, cwd=cwd
    )
    log.close()
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + ready_timeout
    line = b""
    while time.monotonic() < deadline:
        if not sel.select(timeout=0.1):
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        line += chunk
        if b"\n" in line:
            break
    sel.close()
    first = line.split(b"\n", 1)[0].strip()
    try:
        announcement = json.loads(first) if first else None
    except ValueError:
        announcement = None
    if not isinstance(announcement, dict):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise RuntimeError(
            f"{cmd[0]} did not announce itself (got {first[:200]!r}); log:\n{log_path.read_text(errors='replace')[-4000:]}"
        )
    return RunningProcess(proc=proc, announcement=announcement, log_path=log_path)
