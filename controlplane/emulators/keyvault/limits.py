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

__all__ = [
    "CREATE_CLASSES",
    "KEY_CLASSES",
    "Fault",
    "FaultDecision",
    "FaultInjector",
    "Limits",
    "RateLimiter",
    "key_class",
]


# Key transaction classes of the service-limits page, per key type and protection.
KEY_CLASSES = (
    "hsm_key",
    "hsm_key_rsa3072",
    "hsm_key_rsa4096",
    "software_key",
    "software_key_rsa3072",
    "software_key_rsa4096",
)
CREATE_CLASSES = ("hsm_create", "software_create")
_GROUPS = {
    **{c: "key" for c in KEY_CLASSES},
    **{c: "create" for c in CREATE_CLASSES},
    "vault": "vault",
}


@dataclass(frozen=True)
class Limits:
    """Transactions allowed per `window_seconds`, per vault (learn.microsoft.com "Azure Key Vault
    service limits", Key transactions table): CREATE of an HSM / software key; "all other
    transactions" on a key (get, update, delete, list its versions, sign, verify, ...) by key
    type: HSM EC and RSA-2048 2,000, RSA-3,072 500, RSA-4,096 250, software keys twice that;
    transactions on no key (list keys, list deleted keys) 4,000. The thresholds are weighted and
    enforced on their sum: 248 RSA-4,096 HSM GETs and 16 RSA-2,048 HSM GETs fill a window.
    `retry_after`: whether a 429 carries a Retry-After header (real ones often do not)."""

    window_seconds: float = 10.0
    hsm_create: int = 10
    software_create: int = 20
    hsm_key: int = 2000
    hsm_key_rsa3072: int = 500
    hsm_key_rsa4096: int = 250
    software_key: int = 4000
    software_key_rsa3072: int = 1000
    software_key_rsa4096: int = 500
    vault: int = 4000
    retry_after: bool = True

    def __post_init__(self) -> None:
        # Checked here so a bad value (flag or control API) is refused, not a 500 on every request.
        window = self.window_seconds
        if isinstance(window, bool) or not isinstance(window, int | float) or not window > 0:
            raise ValueError(f"window_seconds must be a number > 0, not {window!r}")
        if not isinstance(self.retry_after, bool):
            raise ValueError(f"retry_after must be true or false, not {self.retry_after!r}")
        for name in _GROUPS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"limit {name} must be an integer >= 0, not {value!r}")

    def for_class(self, cls: str) -> int:
        if cls not in _GROUPS:
            raise KeyError(cls)
        return int(getattr(self, cls))


def key_class(kty: str, key_size: int | None) -> str:
    """The transaction class of an operation on a key of this type."""
    prefix = "hsm_key" if kty.endswith("-HSM") else "software_key"
    if key_size in (3072, 4096):
        return f"{prefix}_rsa{key_size}"
    return prefix


class RateLimiter:
    """Sliding-window limits with weighted classes: an operation of class c costs 1/limit(c)
    of its group's window (create, key transactions, vault transactions); a request that would
    take the group over 1 is throttled and not counted (the throttling guidance: failed
    requests that return a 429 do not count towards the limits)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._events: dict[str, collections.deque[tuple[float, float]]] = collections.defaultdict(
            collections.deque
        )
        self._used: dict[str, float] = collections.defaultdict(float)

    def acquire(self, cls: str) -> int | None:
        """Count one transaction; return None if allowed, else seconds to wait (Retry-After)."""
        limit = self.limits.for_class(cls)
        group = _GROUPS[cls]
        window = self.limits.window_seconds
        now = time.monotonic()
        with self._lock:
            events = self._events[group]
            while events and events[0][0] <= now - window:
                self._used[group] -= events.popleft()[1]
            if not events:
                self._used[group] = 0.0  # no float drift across windows
            weight = 1.0 / limit if limit else 2.0
            if self._used[group] + weight > 1.0 + 1e-9:
                oldest = events[0][0] if events else now
                return max(1, math.ceil(oldest + window - now))
            events.append((now, weight))
            self._used[group] += weight
            return None


def _retry_after(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass
class Fault:
    """One injected fault.

    kind: "throttle" (429, with Retry-After unless retry_after is None), "unavailable" (503),
    "outage" (every request fails: connection reset, or 503 if mode="503"), "latency" (delay,
    then serve).
    fraction: probability per matching request; count: fire only for the next N matches.
    target: "vault", "entra" or "all". operations: limit to these operation names (e.g. KeySign).
    """

    kind: str
    fraction: float = 1.0
    count: int | None = None
    retry_after: int | None = 1
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
            retry_after=_retry_after(raw.get("retry_after", 1)),
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
    retry_after: int | None = 1
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
