"""Service limits (sliding-window throttling) and injected faults.

Key Vault counts transactions per vault per 10 s window and answers 429 with a
Retry-After header when a class of operation goes over its limit. Faults are set
through the control API so tests can produce throttling storms, 503s, latency or
a full outage on demand.
"""

from __future__ import annotations

import collections
import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Fault", "FaultDecision", "FaultInjector", "Limits", "RateLimiter"]


@dataclass(frozen=True)
class Limits:
    """Transactions allowed per `window_seconds`, per class (Azure's published numbers)."""

    window_seconds: float = 10.0
    hsm_create: int = 10
    software_create: int = 20
    sign: int = 2000  # EC keys and RSA 2048
    sign_rsa3072: int = 500
    sign_rsa4096: int = 250
    other: int = 4000  # all other transactions (get, list, update, ...)

    def __post_init__(self) -> None:
        # Checked here so a bad value (flag or control API) is refused, not a 500 on every request.
        window = self.window_seconds
        if isinstance(window, bool) or not isinstance(window, int | float) or not window > 0:
            raise ValueError(f"window_seconds must be a number > 0, not {window!r}")
        for name, value in vars(self).items():
            if name != "window_seconds" and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ValueError(f"limit {name} must be an integer >= 0, not {value!r}")

    def for_class(self, cls: str) -> int:
        value = getattr(self, cls, None)
        if not isinstance(value, int):
            raise KeyError(cls)
        return value


class RateLimiter:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._events: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )

    def acquire(self, cls: str) -> int | None:
        """Count one transaction; return None if allowed, else seconds to wait (Retry-After)."""
        limit = self.limits.for_class(cls)
        window = self.limits.window_seconds
        now = time.monotonic()
        with self._lock:
            events = self._events[cls]
            while events and events[0] <= now - window:
                events.popleft()
            if len(events) >= limit:
                return max(1, math.ceil(events[0] + window - now))
            events.append(now)
            return None


@dataclass
class Fault:
    """One injected fault.

    kind: "throttle" (429 + Retry-After), "unavailable" (503), "outage" (every request
    fails: connection reset, or 503 if mode="503"), "latency" (delay, then serve).
    fraction: probability per matching request; count: fire only for the next N matches.
    target: "vault", "entra" or "all". operations: limit to these operation names (e.g. KeySign).
    """

    kind: str
    fraction: float = 1.0
    count: int | None = None
    retry_after: int = 1
    latency_ms: int = 0
    mode: str = "reset"
    target: str = "vault"
    operations: list[str] | None = None
    fired: int = 0

    @staticmethod
    def from_json(raw: dict[str, Any]) -> Fault:
        kind = raw.get("kind")
        if kind not in ("throttle", "unavailable", "outage", "latency"):
            raise ValueError(f"unknown fault kind {kind!r}")
        fault = Fault(
            kind=kind,
            fraction=float(raw.get("fraction", 1.0)),
            count=None if raw.get("count") is None else int(raw["count"]),
            retry_after=int(raw.get("retry_after", 1)),
            latency_ms=int(raw.get("latency_ms", 0)),
            mode=str(raw.get("mode", "reset")),
            target=str(raw.get("target", "all" if kind == "outage" else "vault")),
            operations=list(raw["operations"]) if raw.get("operations") else None,
        )
        if not 0.0 <= fault.fraction <= 1.0:
            raise ValueError("fraction must be within [0, 1]")
        if fault.target not in ("vault", "entra", "all"):
            raise ValueError("target must be vault, entra or all")
        if fault.mode not in ("reset", "503"):
            raise ValueError("mode must be reset or 503")
        return fault

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items()}


@dataclass
class FaultDecision:
    delay_seconds: float = 0.0
    action: str | None = None  # None, "throttle", "unavailable", "reset"
    retry_after: int = 1
    matched: list[str] = field(default_factory=list)


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._rng = random.Random()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_json() for f in self._faults]

    def decide(self, target: str, operation: str) -> FaultDecision:
        decision = FaultDecision()
        with self._lock:
            for fault in list(self._faults):
                if fault.target not in (target, "all"):
                    continue
                if fault.operations is not None and operation not in fault.operations:
                    continue
                if fault.kind != "latency" and decision.action is not None:
                    continue
                if self._rng.random() >= fault.fraction:
                    continue
                fault.fired += 1
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                if fault.kind == "latency":
                    decision.delay_seconds += fault.latency_ms / 1000.0
                elif fault.kind == "throttle":
                    decision.action, decision.retry_after = "throttle", fault.retry_after
                elif fault.kind == "unavailable":
                    decision.action = "unavailable"
                else:
                    decision.action = "reset" if fault.mode == "reset" else "unavailable"
        return decision
