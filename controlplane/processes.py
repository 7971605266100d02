"""Child processes that announce themselves: start, read their one JSON line, stop by pid.

Every long-running program of this project (control plane, trust domain server, emulators, key
service) prints one JSON line on stdout when it is ready. The demo, the test helpers and the
emulators' Python starters all use this one implementation.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["ProcessStartError", "start_announced", "stop_process"]


class ProcessStartError(RuntimeError):
    """The child exited or stayed silent instead of announcing itself."""


def start_announced(
    cmd: list[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 30.0,
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Run `cmd` with stderr to `log_path`; return it with its first stdout line, parsed.

    `env` is added to this process's environment. A child that fails to announce itself is
    killed and the error quotes the end of its log.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # stderr to a file: an unread pipe would fill up and block the child.
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
    finally:
        log.close()
    assert proc.stdout is not None
    line = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in line and time.monotonic() < deadline:
            if not sel.select(timeout=0.1):
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            line += chunk
    first = line.split(b"\n", 1)[0].strip()
    try:
        announcement = json.loads(first) if first else None
    except ValueError:
        announcement = None
    if not isinstance(announcement, dict):
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        tail = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""
        raise ProcessStartError(
            f"{Path(cmd[0]).name} did not announce itself (exit code {proc.returncode}, "
            f"first line {first[:200]!r}); log {log_path}:\n{tail}"
        )
    return proc, announcement


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM by pid, SIGKILL if it does not exit in time; returns the exit code."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode
