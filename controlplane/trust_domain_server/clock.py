"""Clocks. Every time-dependent part of the trust domain server takes a Clock so tests can
jump days in milliseconds instead of sleeping."""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

__all__ = ["Clock", "SystemClock", "ManualClock", "FileOffsetClock"]

log = logging.getLogger(__name__)


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to (unit tests, simulations)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when


class FileOffsetClock:
    """Real time plus an offset in seconds read from a file (testing only: `--clock-file`).

    End-to-end tests write a number of seconds into the file to move a real process's clock
    forward. The file is re-read at most every `reread` seconds of real time; a missing or
    unreadable file means no offset.
    """

    def __init__(self, path: Path, reread: float = 0.05) -> None:
        self._path = path
        self._reread = reread
        self._offset = 0.0
        self._mtime_ns = -1
        self._checked_at = 0.0
        self._lock = threading.Lock()

    def _load(self) -> float:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return 0.0
        if st.st_mtime_ns != self._mtime_ns:
            try:
                text = self._path.read_text().strip()
                self._offset = float(text) if text else 0.0
                self._mtime_ns = st.st_mtime_ns
            except (OSError, ValueError) as exc:
                log.warning("clock file %s unreadable: %s", self._path, exc)
        return self._offset

    def now(self) -> datetime:
        real = datetime.now(UTC)
        mono = real.timestamp()
        with self._lock:
            if mono - self._checked_at >= self._reread:
                self._checked_at = mono
                self._load()
            offset = self._offset
        return real + timedelta(seconds=offset)
