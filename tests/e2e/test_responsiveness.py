"""A control plane validating hostile uploads keeps answering everyone else (issue 9, item 1).

The attack: a KeyManager whose keyIdExtractionRegex backtracks catastrophically (it froze the
whole process under Python's re), sent as 1 MiB uploads of 20 documents at the limits, several
at once. Parsing and validation run on a bounded worker pool off the event loop, and regexes run
on RE2, so /healthz keeps answering while the uploads are validated.

What this test asserts is the property, not a speed: every probe is answered while uploads are
in flight, and none is held anywhere near the time one validation took on the event loop (it froze
the process for minutes). The issue's 50 ms bound is a speed goal, measured by
benchmarks/upload_responsiveness.py against an idle baseline in the same run (p90 32 ms with
worker processes, 79 ms with worker threads: benchmarks/results/upload_responsiveness.md);
a wall-clock bound that tight in a test measures the CI machine's scheduler as much as the server.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from corpus.bad_requests import worst_case_upload
from support.api import make_topology, ok
from support.controlplane import start_control_plane

pytestmark = pytest.mark.e2e

# Far above any healthy answer, far below a validation holding the loop (minutes before RE2).
HELD_SECONDS = 2.0
CONCURRENT_UPLOADS = 4  # more than the parse workers: the rest wait their turn


def test_healthz_is_answered_while_worst_case_uploads_are_validated(tmp_path: Path):
    with start_control_plane(tmp_path) as cp:
        with cp.client() as c:
            ids = make_topology(c)
        url = f"/v1/config/cluster/{ids['cluster']}"
        body = worst_case_upload()
        statuses: list[int] = []
        uploads: list[tuple[float, float]] = []  # (sent, answered) of each upload
        stop = threading.Event()

        def upload() -> None:
            with cp.client() as c:
                while not stop.is_set():
                    sent = time.perf_counter()
                    response = c.put(
                        url, content=body, headers={"Content-Type": "application/json"}
                    )
                    uploads.append((sent, time.perf_counter()))
                    statuses.append(response.status_code)

        uploaders = [threading.Thread(target=upload) for _ in range(CONCURRENT_UPLOADS)]
        for thread in uploaders:
            thread.start()
        latencies = []
        probes: list[float] = []  # when each probe was answered
        try:
            with httpx.Client(base_url=cp.url, timeout=10) as probe:
                ok(probe.get("/healthz"))  # connected: the samples measure the server alone
                time.sleep(1.0)  # the parse workers have started and are busy
                for _ in range(40):
                    start = time.perf_counter()
                    ok(probe.get("/healthz"))
                    latencies.append(time.perf_counter() - start)
                    probes.append(time.perf_counter())
                    time.sleep(0.02)
        finally:
            stop.set()
            for thread in uploaders:
                thread.join(timeout=60)
        assert len(statuses) >= CONCURRENT_UPLOADS and set(statuses) == {422}
        # The probes were answered while uploads were being validated (and then refused) ...
        during = [t for t in probes if any(sent < t < answered for sent, answered in uploads)]
        assert len(during) >= len(probes) // 2, f"{len(during)} of {len(probes)} probes"
        # ... and no probe waited for a validation.
        shown = f"probes (ms): {[round(x * 1000, 1) for x in sorted(latencies)]}"
        assert max(latencies) < HELD_SECONDS, shown
        with cp.client() as c:
            assert ok(c.get(url))["version"] == 0
