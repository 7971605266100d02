"""What checking a server's status report costs the control plane (issue 9: reported keys are
checked before they reach the public bundle).

    .venv/bin/python benchmarks/report_checks.py

A trust domain server core (default key manager, EC P-256) past its first key preparation
reports 4 keys (JWT and X.509 CA, current and next). `check_reported_keys` runs on that report
(a) cold, as for a report with new keys, and (b) warm, as for the heartbeat every server sends
each minute with the keys the control plane checked before. Baseline, same run: `json.loads`
of the report body, which every report pays anyway. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import timeit
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controlplane.keymanagers import KeyManagerContext, build_key_manager, key_manager_digest
from controlplane.reported_keys import _key_material, check_reported_keys
from controlplane.trust_domain_server.clock import ManualClock
from controlplane.trust_domain_server.server import TrustDomainServer

TD = "example.org"


def report(folder: Path) -> tuple[dict, datetime]:  # type: ignore[type-arg]
    clock = ManualClock(datetime.now(UTC))
    context = KeyManagerContext(
        data_dir=folder, kek=os.urandom(32), trust_domain=TD, server_id="bench"
    )
    server = TrustDomainServer(
        TD, clock, lambda spec: build_key_manager(spec, context), key_manager_digest
    )
    server.apply_config({"version": 1, "sections": {}})
    server.rotate()
    clock.advance(timedelta(hours=13))  # past half the lifetime: the next keys exist too
    server.rotate()
    return server.status_report(), clock.now()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        body, now = report(Path(tmp))
    text = json.dumps(body)
    keys = body["keys"]

    def check() -> None:
        check_reported_keys(keys, TD, now, timedelta(days=365))

    def cold() -> None:
        _key_material.cache_clear()
        check()

    n = args.repeat
    baseline = timeit.timeit(lambda: json.loads(text), number=n) / n
    warm = timeit.timeit(check, number=n) / n
    first = timeit.timeit(cold, number=max(1, n // 10)) / max(1, n // 10)
    print(f"Command: `.venv/bin/python benchmarks/report_checks.py --repeat {n}`")
    print(f"Machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {platform.system()}")
    print(f"Report: {len(keys)} keys (EC P-256), {len(text)} bytes of JSON\n")
    print("| what | µs per report | vs json.loads of the body |")
    print("|---|---|---|")
    print(f"| json.loads (baseline) | {baseline * 1e6:.0f} | 1.0x |")
    print(f"| check, keys seen before (heartbeat) | {warm * 1e6:.0f} | {warm / baseline:.1f}x |")
    print(f"| check, new keys | {first * 1e6:.0f} | {first / baseline:.0f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
