"""A control plane validating hostile uploads keeps answering everyone else (issue 9, item 1).

The attack: a KeyManager whose keyIdExtractionRegex backtracks catastrophically (it froze the
whole process under Python's re), sent as 1 MiB uploads of 20 documents at the limits, several
at once. Parsing and validation run on a bounded worker pool off the event loop, and regexes run
on RE2, so /healthz keeps answering within the issue's bound of 50 ms. The bound is the issue's
correctness requirement, measured here against a real process (the client is another process,
so the measurement shares no interpreter lock with the server). On worker threads instead of
processes the event loop waits for the interpreter lock and the 90th percentile was 79 ms
(benchmarks/results/upload_responsiveness.md).
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

HEALTHZ_BOUND_SECONDS = 0.050
CONCURRENT_UPLOADS = 4  # more than the parse workers: the rest wait their turn


def test_healthz_answers_within_50ms_while_worst_case_uploads_are_validated(tmp_path: Path):
    with start_control_plane(tmp_path) as cp:
        with cp.client() as c:
            ids = make_topology(c)
        url = f"/v1/config/cluster/{ids['cluster']}"
        body = worst_case_upload()
        statuses: list[int] = []
        stop = threading.Event()

        def upload() -> None:
            with cp.client() as c:
                while not stop.is_set():
                    response = c.put(
                        url, content=body, headers={"Content-Type": "application/json"}
                    )
                    statuses.append(response.status_code)

        uploaders = [threading.Thread(target=upload) for _ in range(CONCURRENT_UPLOADS)]
        for thread in uploaders:
            thread.start()
        latencies = []
        try:
            with httpx.Client(base_url=cp.url, timeout=10) as probe:
                ok(probe.get("/healthz"))  # connected: the samples measure the server alone
                time.sleep(1.0)  # the parse workers have started and are busy
                for _ in range(40):
                    start = time.perf_counter()
                    ok(probe.get("/healthz"))
                    latencies.append(time.perf_counter() - start)
                    time.sleep(0.02)
        finally:
            stop.set()
            for thread in uploaders:
                thread.join(timeout=60)
        assert len(statuses) >= CONCURRENT_UPLOADS and set(statuses) == {422}
        # The loop is free: nine probes in ten under the bound, and none held for long. (A
        # validation on the event loop held every probe for seconds; the highest probes
        # measure the shared machine's scheduler as much as the server, so the 90th
        # percentile is the bound, and the maximum must stay far below a second.)
        ranked = sorted(latencies)
        shown = f"probes (ms): {[round(x * 1000, 1) for x in ranked]}"
        assert ranked[int(len(ranked) * 0.9)] < HEALTHZ_BOUND_SECONDS, shown
        assert ranked[-1] < 1.0, shown
        with cp.client() as c:
            assert ok(c.get(url))["version"] == 0
