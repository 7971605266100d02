"""A few Prometheus metrics, rendered as text exposition format 0.0.4.

Small on purpose (no extra dependency): counters, and a latency summary (count + sum +
fixed buckets) per key manager type.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Iterable

__all__ = ["Metrics"]

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in pairs
    )
    return "{" + inner + "}" if inner else ""


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.issued: dict[str, int] = defaultdict(int)
        self.failures: dict[tuple[str, str], int] = defaultdict(int)
        self.swaps = 0
        self.nacks = 0
        self._sign_count: dict[str, int] = defaultdict(int)
        self._sign_sum: dict[str, float] = defaultdict(float)
        self._sign_buckets: dict[str, list[int]] = {}

    def issuance(self, svid_type: str) -> None:
        with self._lock:
            self.issued[svid_type] += 1

    def failure(self, svid_type: str, reason: str) -> None:
        with self._lock:
            self.failures[(svid_type, reason)] += 1

    def swap(self) -> None:
        with self._lock:
            self.swaps += 1

    def nack(self) -> None:
        with self._lock:
            self.nacks += 1

    def sign_latency(self, km_type: str, seconds: float) -> None:
        with self._lock:
            self._sign_count[km_type] += 1
            self._sign_sum[km_type] += seconds
            # One counter per bucket (the last one is +Inf); render() makes them cumulative.
            buckets = self._sign_buckets.get(km_type)
            if buckets is None:
                buckets = self._sign_buckets[km_type] = [0] * (len(_BUCKETS) + 1)
            buckets[bisect.bisect_left(_BUCKETS, seconds)] += 1

    def render(self, keys_by_state: dict[tuple[str, str], int]) -> str:
        """`keys_by_state` maps (kind, state) to a count, read from the keyring at scrape time."""
        lines: list[str] = []
        with self._lock:
            lines += [
                "# HELP tds_svid_issued_total SVIDs issued.",
                "# TYPE tds_svid_issued_total counter",
            ]
            for svid_type in ("jwt", "x509"):
                lines.append(
                    f"tds_svid_issued_total{_labels([('type', svid_type)])} {self.issued[svid_type]}"
                )
            lines += [
                "# HELP tds_svid_failures_total Failed SVID requests.",
                "# TYPE tds_svid_failures_total counter",
            ]
            for (svid_type, reason), n in sorted(self.failures.items()):
                lines.append(
                    f"tds_svid_failures_total{_labels([('type', svid_type), ('reason', reason)])} {n}"
                )
            lines += [
                "# HELP tds_sign_seconds Key manager signing latency (wall time, includes GIL waits).",
                "# TYPE tds_sign_seconds histogram",
            ]
            for km_type in sorted(self._sign_count):
                cumulative = 0
                for bound, n in zip(_BUCKETS, self._sign_buckets[km_type], strict=False):
                    cumulative += n
                    lbl = _labels([("key_manager", km_type), ("le", repr(bound))])
                    lines.append(f"tds_sign_seconds_bucket{lbl} {cumulative}")
                lbl_inf = _labels([("key_manager", km_type), ("le", "+Inf")])
                lines.append(f"tds_sign_seconds_bucket{lbl_inf} {self._sign_count[km_type]}")
                lbl = _labels([("key_manager", km_type)])
                lines.append(f"tds_sign_seconds_sum{lbl} {self._sign_sum[km_type]}")
                lines.append(f"tds_sign_seconds_count{lbl} {self._sign_count[km_type]}")
            lines += [
                "# HELP tds_key_manager_swaps_total Key manager hot swaps.",
                "# TYPE tds_key_manager_swaps_total counter",
                f"tds_key_manager_swaps_total {self.swaps}",
                "# HELP tds_config_nacks_total Configs rejected (key manager check failed).",
                "# TYPE tds_config_nacks_total counter",
                f"tds_config_nacks_total {self.nacks}",
            ]
        lines += ["# HELP tds_keys Keys in the keyring.", "# TYPE tds_keys gauge"]
        for (kind, state), n in sorted(keys_by_state.items()):
            lines.append(f"tds_keys{_labels([('kind', kind), ('state', state)])} {n}")
        return "\n".join(lines) + "\n"
