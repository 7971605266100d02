"""Propagation benchmark: N long-polling servers, one config write, time until all hold it.

    .venv/bin/python benchmarks/propagation.py --sizes 100,1000,5000 --databases sqlite,postgres

For each database and N: registers N servers, holds N long-polls against a real control plane
process, writes one config version through the API and measures, per simulated server, the time
from the write being acknowledged (the PUT's response) to that server's reply arriving. Also the
control plane's resident memory per waiting connection. The baseline, measured in the same run
with the same client, is `baseline_longpoll.py`: a bare asyncio fan-out with no database, no
validation and no auth. Prints a Markdown table.

On PostgreSQL it also counts what idle long-polls cost the database: every server long-polls
IDLE_CYCLES times with nothing to deliver, and the database's own statistics
(pg_stat_database.xact_commit) say how many transactions the control plane ran meanwhile.

With `--policy` the deployment has a staged rollout policy (`Rollout`: one stage of 50 %): a
write reaches the stage's servers, whose latency is measured from the write's acknowledgement as
above; then `POST .../rollout/promote` sends it to the rest (measured from the promotion's
acknowledgement, column "promoted"), and a second promote completes the rollout before the next
round. The stage's servers are the ones that answer before the promotion.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from controlplane.emulators.tls import ensure_tls_files  # noqa: E402

from support.postgres import start_postgres  # noqa: E402
from support.processes import RunningProcess, script, start_process  # noqa: E402

# What httpx verifies the servers' certificates with (a context for the run's CA with --tls).
VERIFY: ssl.SSLContext | bool = True
LIFECYCLE = "section: KeyLifecycle\nschema: v1\nspec:\n  jwtKeyTTL: {ttl}h\n"
POLICY = "section: Rollout\nschema: v1\nspec:\n  stages:\n    - {name: half, percent: 50}\n"
IDLE_CYCLES = 3
IDLE_WAIT = 1
# PostgreSQL publishes a backend's counters when it goes idle, at the latest after 10 s; the
# control plane writes batched long-poll contacts every 15 s: 16 s takes in exactly one batch.
STATS_SETTLE = 16.0


@dataclass
class Target:
    name: str
    url: str
    pid: int
    paths: list[str]  # one sync path per simulated server
    headers: list[str]  # one Authorization header line per simulated server (may be empty)

    async def write(self, round_no: int) -> None:
        raise NotImplementedError

    async def waiting(self) -> int:
        raise NotImplementedError

    def transactions(self) -> int | None:
        """Transactions the database committed so far, when it can tell."""
        return None

    async def promote(self) -> None:
        """Staged targets: send the written version to the rest of the servers."""
        raise NotImplementedError

    staged = False


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (steadier than latency on a busy machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def http_get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, header: str
) -> dict[str, Any]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n{header}\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    status = int(head.split(b" ", 2)[1])
    for line in head.split(b"\r\n")[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length)
    if status != 200:
        raise RuntimeError(f"sync answered {status}: {body[:200]!r}")
    return json.loads(body)  # type: ignore[no-any-return]


async def measure(target: Target, rounds: int, tls: ssl.SSLContext | None) -> dict[str, float]:
    host, port = target.url.split("://", 1)[1].split(":")
    n = len(target.paths)
    # Warm up (imports, caches) on one connection, then take the memory baseline with none open.
    r0, w0 = await asyncio.open_connection(host, int(port), ssl=tls)
    await http_get(r0, w0, target.paths[0] + "&wait=0", target.headers[0])
    w0.close()
    await target.waiting()
    await asyncio.sleep(0.3)
    rss_base = rss_kib(target.pid)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    # Servers start over time, not all in one millisecond: each wave of 100 connects and does its
    # first sync (immediate: learns the current versions, warms the cache), as real servers do
    # (a connection that sends nothing is closed after --header-timeout), so the memory figure is
    # what waiting servers hold, not the transient peak of 5,000 cold requests.
    firsts = []
    cpu_first_sync = cpu_seconds(target.pid)
    for start in range(0, n, 100):
        wave = await asyncio.gather(
            *(
                asyncio.open_connection(host, int(port), ssl=tls)
                for _ in range(start, min(n, start + 100))
            )
        )
        conns.extend(wave)
        firsts += await asyncio.gather(
            *(
                http_get(r, w, p + "&wait=0", h)
                for (r, w), p, h in zip(
                    wave,
                    target.paths[start : start + 100],
                    target.headers[start : start + 100],
                    strict=True,
                )
            )
        )
    cpu_first_sync = cpu_seconds(target.pid) - cpu_first_sync  # connect + one request each
    versions = [(f["config"]["version"], f.get("bundle", {}).get("version", 0)) for f in firsts]
    await asyncio.sleep(0.3)
    rss_synced = rss_kib(target.pid)
    latencies: list[float] = []
    from_send: list[float] = []
    promoted: list[float] = []
    rss_waiting = 0
    cpu_ms: list[float] = []  # the server's CPU time from the write to the last reply
    for round_no in range(rounds):
        arrivals: list[float] = [0.0] * n

        async def hold(i: int, arrivals: list[float] = arrivals) -> None:
            r, w = conns[i]
            have_c, have_b = versions[i]
            path = f"{target.paths[i]}&config_version={have_c}&bundle_version={have_b}&wait=60"
            reply = await http_get(r, w, path, target.headers[i])
            arrivals[i] = time.perf_counter()
            versions[i] = (reply["config"]["version"], reply.get("bundle", {}).get("version", 0))

        tasks = [asyncio.create_task(hold(i)) for i in range(n)]
        deadline = time.monotonic() + 120
        while await target.waiting() < n:
            if time.monotonic() > deadline:
                raise RuntimeError("long-polls never all arrived")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        rss_waiting = max(rss_waiting, rss_kib(target.pid))
        cpu_before = cpu_seconds(target.pid)
        sent = time.perf_counter()
        await target.write(round_no)
        acked = time.perf_counter()
        stage: list[int] = list(range(n))
        if target.staged:
            # The stage's servers answer now; the others wait for the promotion.
            await asyncio.sleep(2.0)
            stage = [i for i in range(n) if arrivals[i]]
            assert 0 < len(stage) < n, f"{len(stage)} of {n} servers answered the staged write"
            await target.promote()
            promote_acked = time.perf_counter()
        await asyncio.gather(*tasks)
        cpu_ms.append((cpu_seconds(target.pid) - cpu_before) * 1000)
        if target.staged:
            await target.promote()  # completes the rollout: the next round starts from here
            rest = sorted(set(range(n)) - set(stage))
            promoted += [max(0.0, arrivals[i] - promote_acked) * 1000 for i in rest]
        # Replies may beat the write's own response (the cache is told at commit): count those as 0.
        latencies += [max(0.0, arrivals[i] - acked) * 1000 for i in stage]
        from_send += [(arrivals[i] - sent) * 1000 for i in stage]
    idle = await idle_cost(target, conns, versions) if target.transactions() is not None else {}
    for _, w in conns:
        w.close()
    latencies.sort()
    from_send.sort()
    promoted.sort()
    staged = {"stage_servers": len(latencies) / rounds} if target.staged else {}
    if promoted:
        staged["promoted_p99"] = percentile(promoted, 0.99)
    return {
        **idle,
        **staged,
        "p50": statistics.median(latencies),
        "p99": percentile(latencies, 0.99),
        "max": latencies[-1],
        "send_p99": percentile(from_send, 0.99),
        "kib_per_conn": max(0, rss_waiting - rss_base) / n,
        "cpu_ms": statistics.fmean(cpu_ms),
        "cpu_us_per_first_sync": cpu_first_sync * 1e6 / n,
        "kib_connected_synced": max(0, rss_synced - rss_base) / n,
        "kib_wait": max(0, rss_waiting - rss_synced) / n,
    }


async def idle_cost(
    target: Target, conns: list[Any], versions: list[tuple[int, int]]
) -> dict[str, float]:
    """Database transactions while every server long-polls IDLE_CYCLES times with nothing new."""
    await asyncio.sleep(STATS_SETTLE)
    before = target.transactions()
    for _ in range(IDLE_CYCLES):
        replies = await asyncio.gather(
            *(
                http_get(
                    r,
                    w,
                    f"{path}&config_version={c}&bundle_version={b}&wait={IDLE_WAIT}",
                    header,
                )
                for (r, w), path, header, (c, b) in zip(
                    conns, target.paths, target.headers, versions, strict=True
                )
            )
        )
        assert not any(reply["changed"] for reply in replies)
    await asyncio.sleep(STATS_SETTLE)
    after = target.transactions()
    assert before is not None and after is not None
    return {"idle_polls": len(conns) * IDLE_CYCLES, "idle_transactions": after - before}


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class ControlPlaneTarget(Target):
    def __init__(
        self,
        url: str,
        pid: int,
        admin: str,
        tdd: str,
        servers: list[dict[str, str]],
        database_url: str | None,
        staged: bool = False,
    ) -> None:
        super().__init__(
            "control plane",
            url,
            pid,
            [f"/v1/servers/{s['server_id']}/sync?x=1" for s in servers],
            [f"Authorization: Bearer {s['credential']}\r\n" for s in servers],
        )
        self.http = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60, verify=VERIFY
        )
        self.tdd = tdd
        self.database_url = database_url
        self.staged = staged

    async def promote(self) -> None:
        r = await self.http.post(f"/v1/trust-domain-deployments/{self.tdd}/rollout/promote")
        r.raise_for_status()

    def transactions(self) -> int | None:
        if not self.database_url:
            return None
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(self.database_url)
        # Asked from another database, so that asking is not counted.
        admin = url.set(drivername="postgresql", database="postgres")
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as c:
            row = c.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (url.database,)
            ).fetchone()
        return int(row[0]) if row else None

    async def write(self, round_no: int) -> None:
        r = await self.http.put(
            f"/v1/config/trust-domain-deployment/{self.tdd}",
            json={"yaml": LIFECYCLE.format(ttl=round_no + 2)},
        )
        r.raise_for_status()
        assert r.json()["changed"], r.text

    async def waiting(self) -> int:
        text = (await self.http.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith("spirl_longpolls_waiting "):
                return int(float(line.split()[1]))
        return 0


class BaselineTarget(Target):
    def __init__(self, url: str, pid: int, n: int) -> None:
        super().__init__("baseline", url, pid, ["/sync?x=1"] * n, [""] * n)
        self.http = httpx.AsyncClient(base_url=url, timeout=60, verify=VERIFY)
        self._n = n

    async def write(self, round_no: int) -> None:
        (await self.http.post("/write", content=b"x")).raise_for_status()

    async def waiting(self) -> int:
        return self._n  # the baseline has no metrics; the sleep after connecting covers it


def prepare_control_plane(
    workdir: Path, database_url: str | None, n: int, tls_args: list[str], policy: bool = False
) -> tuple[RunningProcess, ControlPlaneTarget]:
    from controlplane.services import auth, objects
    from controlplane.store.database import create_db_engine, migrate, resolve_database_url
    from controlplane.store.unit_of_work import UnitOfWorkFactory

    data = workdir / "data"
    url = resolve_database_url(database_url, data)
    engine = create_db_engine(url)
    migrate(engine)
    uow = UnitOfWorkFactory(engine)
    with uow() as u:
        admin, _ = auth.create_token(u, "admin", "bench")
    with uow() as u:
        td = objects.create_trust_domain(u, f"bench-{n}.example", "bench")
    with uow() as u:
        tdd = objects.create_deployment(u, "bench", td["id"], "bench")
    servers = []
    for i in range(n):
        with uow() as u:
            join = auth.create_join_token(u, tdd["id"], 3600, "bench")
        with uow() as u:
            servers.append(auth.register_server(u, join["token"], f"s{i}", None))
    with uow() as u:
        from controlplane.services.config import parse_upload, set_config

        first = LIFECYCLE.format(ttl=1) + ("---\n" + POLICY if policy else "")
        set_config(
            u,
            "trust-domain-deployment",
            tdd["id"],
            parse_upload(first, "trust-domain-deployment"),
            actor="bench",
        )
    engine.dispose()
    args = [
        script("spirl-controlplane"),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data),
        "--log-level",
        "warning",
    ]
    if database_url:
        args += ["--database-url", database_url]
    proc = start_process(args + tls_args, log_path=workdir / "controlplane.log")
    return proc, ControlPlaneTarget(
        proc.announcement["url"], proc.pid, admin, tdd["id"], servers, database_url, policy
    )


def run(
    sizes: list[int],
    databases: list[str],
    rounds: int,
    tls_dir: Path | None,
    policy: bool = False,
) -> list[dict[str, Any]]:
    global VERIFY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    tls: ssl.SSLContext | None = None
    tls_args: list[str] = []
    if tls_dir is not None:
        files = ensure_tls_files(tls_dir)
        tls = ssl.create_default_context(cafile=str(files.ca_file))
        VERIFY = tls
        tls_args = ["--tls-cert", str(files.cert_file), "--tls-key", str(files.key_file)]
    results = []
    pg = start_postgres() if "postgres" in databases else None
    try:
        for n in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                base = start_process(
                    [sys.executable, str(ROOT / "benchmarks" / "baseline_longpoll.py"), *tls_args],
                    log_path=Path(tmp) / "baseline.log",
                )
                try:
                    baseline = asyncio.run(
                        measure(BaselineTarget(base.announcement["url"], base.pid, n), rounds, tls)
                    )
                finally:
                    base.stop()
            print(f"N={n} baseline: {baseline}", file=sys.stderr, flush=True)
            for db in databases:
                with tempfile.TemporaryDirectory() as tmp:
                    url = pg.create_database() if db == "postgres" and pg else None
                    proc, target = prepare_control_plane(Path(tmp), url, n, tls_args, policy)
                    try:
                        measured = asyncio.run(measure(target, rounds, tls))
                    finally:
                        proc.stop()
                print(f"N={n} {db}: {measured}", file=sys.stderr, flush=True)
                results.append({"n": n, "database": db, "cp": measured, "baseline": baseline})
    finally:
        if pg:
            pg.stop()
    return results


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| N | database | p50 ms | p99 ms | max ms | baseline p99 ms | p99 ratio | p99 from send ms (baseline) | KiB/conn | baseline KiB/conn | CPU ms per write (baseline) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cp, base = r["cp"], r["baseline"]
        ratio = cp["p99"] / base["p99"] if base["p99"] > 0 else float("inf")
        lines.append(
            f"| {r['n']} | {r['database']} | {cp['p50']:.1f} | {cp['p99']:.1f} | {cp['max']:.1f} | "
            f"{base['p99']:.1f} | {ratio:.2f}x | {cp['send_p99']:.1f} ({base['send_p99']:.1f}) | "
            f"{cp['kib_per_conn']:.1f} | {base['kib_per_conn']:.1f} | "
            f"{cp['cpu_ms']:.0f} ({base['cpu_ms']:.0f}) |"
        )
    lines += _table(
        [r for r in results if "stage_servers" in r["cp"]],
        "servers in the stage | promoted: p99 ms to the rest",
        lambda cp: f"{cp['stage_servers']:.0f} | {cp.get('promoted_p99', 0):.1f}",
    )
    lines += _table(
        [r for r in results if "idle_polls" in r["cp"]],
        "idle long-polls | database transactions meanwhile",
        lambda cp: f"{cp['idle_polls']:.0f} | {cp['idle_transactions']:.0f}",
    )
    return "\n".join(lines)


def _table(
    results: list[dict[str, Any]], headers: str, cells: Callable[[dict[str, Any]], str]
) -> list[str]:
    """A second table of some results: N, database, then `headers` (Markdown cells)."""
    if not results:
        return []
    lines = ["", f"| N | database | {headers} |", "|---|---|" + "---|" * (headers.count("|") + 1)]
    lines += [f"| {r['n']} | {r['database']} | {cells(r['cp'])} |" for r in results]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--policy",
        action="store_true",
        help="a staged rollout policy (one 50%% stage): p99 is measured for the stage's servers",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve the control plane and the baseline over TLS (a loopback CA made for the run)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tls_tmp:
        results = run(
            [int(s) for s in args.sizes.split(",")],
            args.databases.split(","),
            args.rounds,
            Path(tls_tmp) if args.tls else None,
            args.policy,
        )
    print(markdown(results))


if __name__ == "__main__":
    main()
