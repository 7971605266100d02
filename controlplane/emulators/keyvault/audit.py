"""The vault's diagnostic log: one JSON line per key operation, AuditEvent category."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

__all__ = ["AuditLog"]


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(
        self,
        *,
        operation: str,
        identity: dict[str, Any] | None,
        key_name: str | None,
        key_version: str | None,
        status: int,
        request_uri: str,
        caller_ip: str,
        emulated_time: float,
        properties: dict[str, Any] | None = None,
    ) -> None:
        event = {
            "time": dt.datetime.fromtimestamp(emulated_time, dt.UTC)
            .isoformat()
            .replace("+00:00", "Z"),
            "category": "AuditEvent",
            "operationName": operation,
            "identity": identity,
            "keyName": key_name,
            "keyVersion": key_version,
            "resultType": "Success" if status < 400 else "Failure",
            "httpStatusCode": status,
            "requestUri": request_uri,
            "callerIpAddress": caller_ip,
            "properties": properties or {},
        }
        line = json.dumps(event, separators=(",", ":")) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line)

    def read(self, since: int = 0) -> list[dict[str, Any]]:
        """Events from line number `since` on (0-based), for the control API."""
        with self._lock:
            if not self.path.exists():
                return []
            lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines[since:] if line.strip()]
