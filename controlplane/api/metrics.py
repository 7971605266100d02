"""A small Prometheus text-format registry (counters, gauges, one latency histogram)."""

from __future__ import annotations

import bisect
import itertools
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Labels = tuple[tuple[str, str], ...]


def _fmt_labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._help: dict[str, tuple[str, str]] = {}
        self._hist: dict[Labels, list[float]] = {}
        self._hist_sum: dict[Labels, float] = defaultdict(float)
        self._gauge_sources: list[Callable[[], Iterable[tuple[str, str, Labels, float]]]] = []

    def describe(self, name: str, kind: str, text: str) -> None:
        self._help[name] = (kind, text)

    def inc(self, name: str, labels: Labels = (), amount: float = 1.0) -> None:
        with self._lock:
            series = self._counters[name]
            series[labels] = series.get(labels, 0.0) + amount

    def observe_latency(self, labels: Labels, seconds: float) -> None:
        # Per-bucket counts here; render() makes them cumulative (cheap on the hot path).
        with self._lock:
            buckets = self._hist.setdefault(labels, [0.0] * (len(LATENCY_BUCKETS) + 1))
            buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._hist_sum[labels] += seconds

    def add_gauge_source(
        self, source: Callable[[], Iterable[tuple[str, str, Labels, float]]]
    ) -> None:
        """`source()` yields (name, help, labels, value) at scrape time."""
        self._gauge_sources.append(source)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, series in sorted(self._counters.items()):
                kind, text = self._help.get(name, ("counter", name))
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                lines += [f"{name}{_fmt_labels(lb)} {v:g}" for lb, v in sorted(series.items())]
            name = "spirl_http_request_duration_seconds"
            lines += [f"# HELP {name} HTTP request latency by route", f"# TYPE {name} histogram"]
            for lb, buckets in sorted(self._hist.items()):
                cumulative = list(itertools.accumulate(buckets))
                for bound, count in zip(LATENCY_BUCKETS, cumulative, strict=False):
                    le = (("le", f"{bound:g}"),)
                    lines.append(f"{name}_bucket{_fmt_labels(lb + le)} {count:g}")
                total = cumulative[-1]
                lines.append(f"{name}_bucket{_fmt_labels(lb + (('le', '+Inf'),))} {total:g}")
                lines.append(f"{name}_sum{_fmt_labels(lb)} {self._hist_sum[lb]:.6f}")
                lines.append(f"{name}_count{_fmt_labels(lb)} {total:g}")
        described: set[str] = set()
        for source in self._gauge_sources:
            for gname, text, lb, value in source():
                if gname not in described:
                    lines += [f"# HELP {gname} {text}", f"# TYPE {gname} gauge"]
                    described.add(gname)
                lines.append(f"{gname}{_fmt_labels(lb)} {value:g}")
        return "\n".join(lines) + "\n"
