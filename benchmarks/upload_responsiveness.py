"""/healthz latency while hostile 1 MiB uploads are validated: worker processes vs worker threads.

Starts `spirl-controlplane serve` (SQLite) three times: idle (the baseline, measured in the
same run), then with CONCURRENT uploads of the worst-case body of tests/e2e/test_responsiveness.py
in flight, once parsing them on worker threads (the parse pool's INLINE_BYTES raised past the
body size) and once on worker processes (the shipped setting). Probes /healthz on a kept-alive
connection every 20 ms and prints percentiles and their ratio to the idle baseline.

    .venv/bin/python benchmarks/upload_responsiveness.py --probes 200
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from corpus.bad_requests import worst_case_upload  # noqa: E402
from support.api import make_topology  # noqa: E402
from support.controlplane import create_admin_token  # noqa: E402
from support.processes import start_process  # noqa: E402

SERVE = (
    "import sys, controlplane.api.parse_pool as pool; pool.INLINE_BYTES = int(sys.argv[1]); "
    "from controlplane.cli.server import main; sys.exit(main(sys.argv[2:]))"
)


def run(mode: str, probes: int, concurrent: int, folder: Path) -> dict[str, float]:
    data = folder / mode
    data.mkdir()
    token = create_admin_token(data)
    inline = {"threads": 10**9}.get(mode, 65_536)
    process = start_process(
        [
            sys.executable,
            "-c",
            SERVE,
            str(inline),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--migrate",
            "--data-dir",
            str(data),
        ],
        log_path=folder / f"{mode}.log",
    )
    url = process.announcement["url"]
    headers = {"Authorization": f"Bearer {token}"}
    stop = threading.Event()
    done: list[int] = []
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            target = f"/v1/config/cluster/{make_topology(c)['cluster']}"
        body = worst_case_upload()

        def upload() -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
                while not stop.is_set():
                    c.put(target, content=body, headers={"Content-Type": "application/json"})
                    done.append(1)

        uploaders = [
            threading.Thread(target=upload) for _ in range(concurrent if mode != "idle" else 0)
        ]
        for thread in uploaders:
            thread.start()
        latencies = []
        with httpx.Client(base_url=url, timeout=60) as probe:
            probe.get("/healthz")
            time.sleep(1.5)
            for _ in range(probes):
                start = time.perf_counter()
                probe.get("/healthz")
                latencies.append((time.perf_counter() - start) * 1000)
                time.sleep(0.02)
        stop.set()
        for thread in uploaders:
            thread.join()
    finally:
        process.stop()
    ranked = sorted(latencies)
    pick = lambda q: round(ranked[min(len(ranked) - 1, int(len(ranked) * q))], 2)  # noqa: E731
    return {
        "p50_ms": pick(0.5),
        "p90_ms": pick(0.9),
        "p99_ms": pick(0.99),
        "max_ms": pick(1.0),
        "uploads_refused": len(done),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            m: run(m, args.probes, args.concurrent, Path(tmp))
            for m in ("idle", "threads", "processes")
        }
    idle = results["idle"]
    for mode, r in results.items():
        r["p90_vs_idle"] = round(r["p90_ms"] / idle["p90_ms"], 1)
        print(json.dumps({"mode": mode, **r}))


if __name__ == "__main__":
    main()
