"""Hot swap under load: JWT-SVID issuance while the KeyManager config changes every second.

    .venv/bin/python benchmarks/hot_swap.py --duration 60

Starts a control plane (SQLite), a webhook key service (`spirl-keyservice`) and one trust
domain server (`spirl-tds`, local API on its default Unix socket) as processes on this
host. The deployment gets a KeyLifecycle of
1 minute for both key kinds, so keys rotate about every 30 s during the run (the server's
rotator is set to check every second instead of every 10 s). Then `--clients` concurrent
clients (keep-alive HTTP/1.1 connections, one asyncio task each) issue JWT-SVIDs through
`POST /v1/svid/jwt` without pause:

1. steady phase (`--steady` seconds): no config change;
2. swap phase (`--duration` seconds): the cluster's KeyManager section is rewritten every
   second, cycling webhook (a new key service namespace each time) -> webhook (another
   namespace) -> default -> ..., each change a real write through the control plane API
   that the server receives by long-poll, checks and hot-swaps. Keys made during the phase
   come from the manager active when the rotator prepares them; the cycle is aligned with
   the server's next key preparation so that a webhook manager makes it (see `swapper`).

Reported: failed issuances (goal 0), p50/p99 issuance latency in each phase (goal: swap p99
<= 2x steady p99), config apply latency (PUT sent -> `applied_at` on the server),
rotations seen (JWT kids and the key manager that made them), and throughput. The throughput
baseline is measured in the same run, after the processes are stopped: raw `cryptography`
ECDSA P-256 signing (one thread) of the very digests the server signed (goal: issuance >=
0.5x raw). An in-process variant calls `Issuer.issue_jwt` directly (default key manager, no
HTTP) so the cost of the HTTP layer is visible. `--profile` prints a cProfile of the
in-process issuer and a timeit breakdown of its pieces to stderr. Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import hashlib
import io
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from controlplane.emulators.keyservice import KeyServiceProcess, start_keyservice  # noqa: E402

from support.controlplane import ControlPlane, start_control_plane  # noqa: E402
from support.processes import RunningProcess, script, start_process  # noqa: E402

TD = "bench.example.org"
LIFETIME_SECONDS = 60  # both key kinds; the schema's minimum
LIFECYCLE = "section: KeyLifecycle\nschema: v1\nspec:\n  jwtKeyTTL: 1m\n  x509CATTL: 1m\n"
WEBHOOK_KM = (
    "section: KeyManager\nschema: v1\nspec:\n  extensions:\n    webhook:\n"
    '      webhookURL: "{url}"\n'
)
DEFAULT_KM = "section: KeyManager\nschema: v1\nspec: {}\n"
REQUEST_TIMEOUT = 10.0


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def digest_of_token(token: str) -> bytes:
    """The SHA-256 digest the server signed for an ES256 JWT: hash of `header.claims`."""
    signing_input = token.rsplit(".", 1)[0]
    return hashlib.sha256(signing_input.encode("ascii")).digest()


def kid_of_header(header_b64: str) -> str:
    padded = header_b64 + "=" * (-len(header_b64) % 4)
    return str(json.loads(base64.urlsafe_b64decode(padded))["kid"])


# --- the environment ------------------------------------------------------------------------


@dataclass
class Env:
    cp: ControlPlane
    keyservice: KeyServiceProcess
    tds: RunningProcess
    tds_socket: str  # the local API's Unix socket

    def tds_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=self.tds_socket),
            base_url="http://tds",
            timeout=10,
        )

    cluster_id: str
    tdd_id: str

    def stop(self) -> None:
        self.tds.stop()
        self.keyservice.stop()
        self.cp.stop()


def start_env(tmp: Path) -> Env:
    cp = start_control_plane(tmp, extra_args=["--log-level", "warning"])
    keyservice = start_keyservice(tmp)
    try:
        with cp.client() as c:
            td = c.post("/v1/trust-domains", json={"name": TD}).json()
            tdd = c.post(
                "/v1/trust-domain-deployments", json={"name": "bench", "trust_domain_id": td["id"]}
            ).json()
            cl = c.post(
                "/v1/clusters", json={"name": "bench", "trust_domain_deployment_id": tdd["id"]}
            ).json()
            c.put(
                f"/v1/config/trust-domain-deployment/{tdd['id']}", json={"yaml": LIFECYCLE}
            ).raise_for_status()
            token = c.post(
                f"/v1/trust-domain-deployments/{tdd['id']}/join-tokens", json={"ttl_seconds": 600}
            ).json()["token"]
        tds = start_process(
            [
                script("spirl-tds"),
                "run",
                "--endpoint",
                cp.url,
                "--trust-domain-deployment",
                tdd["id"],
                "--cluster",
                cl["id"],
                "--data-dir",
                str(tmp / "tds"),
                "--name",
                "bench",
                "--join-token",
                token,
                "--rotate-interval",
                "1",
                "--log-level",
                "WARNING",
            ],
            log_path=tmp / "tds.log",
        )
    except BaseException:
        keyservice.stop()
        cp.stop()
        raise
    return Env(cp, keyservice, tds, tds.announcement["socket"], cl["id"], tdd["id"])


# --- load -----------------------------------------------------------------------------------


@dataclass
class Sample:
    start: float  # perf_counter at send
    latency: float  # seconds
    header: str | None  # the JWT's header segment (kid lookup later), None on failure
    error: str | None = None


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)  # a sample of what the server signed
    kid_manager: dict[str, str] = field(default_factory=dict)  # kid -> key manager type
    applies: list[tuple[int, float, str]] = field(default_factory=list)  # version, sent wall, km
    applied_at: dict[int, float] = field(default_factory=dict)  # version -> applied wall time
    swap_writes: int = 0
    phase_bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # phase -> process -> cores


async def client_loop(
    socket_path: str, worker: int, stop_at: float, run: Run, digest_every: int
) -> None:
    body = json.dumps(
        {"spiffe_id": f"spiffe://{TD}/bench/w{worker}", "audience": ["bench"]}
    ).encode()
    request = (
        b"POST /v1/svid/jwt HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    n = 0
    while time.perf_counter() < stop_at:
        start = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_unix_connection(socket_path)
            assert reader is not None
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            payload = await asyncio.wait_for(reader.readexactly(length), REQUEST_TIMEOUT)
            latency = time.perf_counter() - start
            if status != 200:
                run.samples.append(
                    Sample(start, latency, None, f"HTTP {status}: {payload[:200]!r}")
                )
                continue
            token = json.loads(payload)["token"]
            run.samples.append(Sample(start, latency, token.split(".", 1)[0]))
            n += 1
            if n % digest_every == 0:
                run.digests.append(digest_of_token(token))
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            run.samples.append(
                Sample(start, time.perf_counter() - start, None, f"{type(exc).__name__}: {exc}")
            )
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def status_poller(env: Env, stop_at: float, run: Run) -> None:
    """Learns which key manager made each kid and when each config version was applied."""
    async with env.tds_client() as http:
        while time.perf_counter() < stop_at:
            st = (await http.get("/v1/status")).json()
            for key in st["keys"]:
                run.kid_manager.setdefault(key["kid"], key["key_manager"]["type"])
            if st.get("applied_version") is not None and st.get("applied_at"):
                run.applied_at.setdefault(
                    int(st["applied_version"]),
                    datetime.fromisoformat(st["applied_at"]).timestamp(),
                )
            await asyncio.sleep(0.1)


async def next_preparation(env: Env) -> float:
    """perf_counter time at which the server prepares its next JWT key: the newest key's
    not_after minus half the lifetime (keys of both kinds were made together)."""
    async with env.tds_client() as http:
        keys = (await http.get("/v1/status")).json()["keys"]
    newest = max(datetime.fromisoformat(k["not_after"]).timestamp() for k in keys)
    return newest - LIFETIME_SECONDS / 2 - time.time() + time.perf_counter()


async def swapper(env: Env, start_at: float, stop_at: float, run: Run) -> None:
    """Rewrites the cluster's KeyManager once a second between start_at and stop_at.

    Cycle: webhook (new namespace) -> webhook (another) -> default. Each webhook step builds
    and checks a new manager. Key preparation comes about every 30 s, a multiple of the
    cycle, so without care every preparation can land on the same step (an early version of
    this benchmark never saw a webhook-made key). The cycle is aligned so that the server's
    next preparation (its rotator ticks within a second of the threshold) falls in the two
    webhook steps, and keys made by a webhook manager sign during the phase too.
    """
    await asyncio.sleep(max(0.0, start_at - 2 - time.perf_counter()))
    step_of_preparation = int(await next_preparation(env) - start_at)
    offset = -step_of_preparation % 3
    headers = {"Authorization": f"Bearer {env.cp.admin_token}"}
    async with httpx.AsyncClient(base_url=env.cp.url, headers=headers, timeout=30) as http:
        i = 0
        while True:
            due = start_at + i
            if due >= stop_at:
                return
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            if (i + offset) % 3 == 2:
                km, text = "default", DEFAULT_KM
            else:
                km, text = "webhook", WEBHOOK_KM.format(url=env.keyservice.namespace_url(f"ns{i}"))
            sent = time.time()
            r = await http.put(f"/v1/config/cluster/{env.cluster_id}", json={"yaml": text})
            r.raise_for_status()
            # The effective version the server will apply: read it back (opaque, monotonic).
            eff = (
                await http.get(
                    "/v1/effective-config",
                    params={"trust_domain_deployment_id": env.tdd_id, "cluster_id": env.cluster_id},
                )
            ).json()["version"]
            run.applies.append((int(eff), sent, km))
            run.swap_writes += 1
            i += 1


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def cpu_sampler(env: Env, run: Run) -> None:
    """CPU used per process in each phase, in cores (1.0 = one core busy all the time)."""
    pids = {
        "spirl-tds": env.tds.pid,
        "control plane": env.cp.pid,
        "key service": env.keyservice.pid,
        "load client (this)": os.getpid(),
    }
    for phase, (lo, hi) in run.phase_bounds.items():
        await asyncio.sleep(max(0.0, lo - time.perf_counter()))
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        await asyncio.sleep(max(0.0, hi - time.perf_counter()))
        run.cpu[phase] = {
            name: (cpu_seconds(pid) - before[name]) / (hi - lo) for name, pid in pids.items()
        }


async def drive(env: Env, clients: int, warmup: float, steady: float, duration: float) -> Run:
    run = Run()
    t0 = time.perf_counter()
    steady_from = t0 + warmup
    swap_from = steady_from + steady
    end = swap_from + duration
    run.phase_bounds = {"steady": (steady_from, swap_from), "swap": (swap_from, end)}
    tasks = [
        asyncio.create_task(client_loop(env.tds_socket, w, end, run, digest_every=7))
        for w in range(clients)
    ]
    tasks.append(asyncio.create_task(status_poller(env, end + 0.5, run)))
    tasks.append(asyncio.create_task(swapper(env, swap_from, end, run)))
    tasks.append(asyncio.create_task(cpu_sampler(env, run)))
    await asyncio.gather(*tasks)
    return run


def tds_metrics(socket_path: str) -> dict[str, float]:
    out: dict[str, float] = {}
    transport = httpx.HTTPTransport(uds=socket_path)
    with httpx.Client(transport=transport, base_url="http://tds", timeout=10) as http:
        text = http.get("/metrics").text
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# --- baselines ------------------------------------------------------------------------------


def raw_sign_rate(digests: list[bytes], seconds: float) -> float:
    """Signatures per second: one thread, cryptography ECDSA P-256 over precomputed digests."""
    key = ec.generate_private_key(ec.SECP256R1())
    algorithm = ec.ECDSA(Prehashed(hashes.SHA256()))
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for d in digests:
            key.sign(d, algorithm)
        n += len(digests)
        if time.perf_counter() >= deadline:
            break
    return n / (time.perf_counter() - start)


def in_process_issuer(tmp: Path) -> Any:
    from controlplane.keymanagers import KeyManagerContext, build_key_manager, key_manager_digest
    from controlplane.keymanagers.default import load_or_create_kek
    from controlplane.trust_domain_server.clock import SystemClock
    from controlplane.trust_domain_server.server import TrustDomainServer

    km_dir = tmp / "inproc-km"
    context = KeyManagerContext(
        data_dir=km_dir, kek=load_or_create_kek(km_dir, env_var=""), trust_domain=TD, server_id="b"
    )
    server = TrustDomainServer(
        TD, SystemClock(), lambda spec: build_key_manager(spec, context), key_manager_digest
    )
    if not server.apply_config({"version": 1, "sections": {}}):
        raise RuntimeError(f"in-process server did not apply its config: {server.error}")
    server.rotate()
    return server


def issue_rate(server: Any, seconds: float, digests: list[bytes] | None = None) -> float:
    issue = server.issuer.issue_jwt
    sid = f"spiffe://{TD}/bench/inproc"
    aud = ["bench"]
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(200):
            token = issue(sid, aud)
            if digests is not None and len(digests) < 5000:
                digests.append(digest_of_token(token))
        n += 200
    return n / (time.perf_counter() - start)


SORT = "tottime"


def profile_issuer(server: Any, calls: int) -> str:
    sid = f"spiffe://{TD}/bench/inproc"
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        server.issuer.issue_jwt(sid, ["bench"])
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats(SORT).print_stats(25)
    return out.getvalue()


def breakdown(server: Any) -> str:
    """Per-call cost of the pieces of one in-process JWT-SVID issuance (timeit, best of 3)."""
    import timeit

    from controlplane.keymanagers.base import HashAlgorithm, KeyType, SigningAlgorithm
    from controlplane.trust_domain_server.crypto import sign_jws
    from controlplane.trust_domain_server.issuer import validate_spiffe_id
    from controlplane.trust_domain_server.keyring import KeyKind

    rec, handle = server.keyring.signer_for(KeyKind.JWT, server.clock.now())
    manager = handle.instance
    digest = hashlib.sha256(b"x").digest()
    alg = SigningAlgorithm(HashAlgorithm.SHA256)
    key = ec.generate_private_key(ec.SECP256R1())
    ecdsa = ec.ECDSA(Prehashed(hashes.SHA256()))
    sid = f"spiffe://{TD}/bench/inproc"
    header = {"alg": "ES256", "kid": rec.kid, "typ": "JWT"}
    claims = {"sub": sid, "aud": ["bench"], "exp": 1, "iat": 1}
    pieces = {
        "raw cryptography sign (prehashed)": lambda: key.sign(digest, ecdsa),
        "DefaultKeyManager.sign_digest": lambda: manager.sign_digest(rec.kid, digest, alg),
        "  its key lookup (_entry: path, stat, lock)": lambda: manager._entry(rec.kid),
        "sign_jws around a raw signer": lambda: sign_jws(
            header, claims, KeyType.EC_P256, lambda d, a: key.sign(d, ecdsa)
        ),
        "validate_spiffe_id": lambda: validate_spiffe_id(sid, TD),
        "Keyring.signer_for + clock": lambda: server.keyring.signer_for(
            KeyKind.JWT, server.clock.now()
        ),
        "Metrics.sign_latency": lambda: server.metrics.sign_latency("default", 0.001),
        "Issuer.issue_jwt (all of it)": lambda: server.issuer.issue_jwt(sid, ["bench"]),
    }
    n = 20000
    lines = ["| piece | µs per call |", "|---|---|"]
    for name, fn in pieces.items():
        best = min(timeit.repeat(fn, number=n, repeat=3)) / n * 1e6
        lines.append(f"| {name} | {best:.1f} |")
    return "\n".join(lines)


# --- report ---------------------------------------------------------------------------------


def phase_stats(run: Run, phase: str) -> dict[str, Any]:
    lo, hi = run.phase_bounds[phase]
    mine = [s for s in run.samples if lo <= s.start < hi]
    ok = sorted(s.latency * 1000 for s in mine if s.error is None)
    kids = Counter(kid_of_header(s.header) for s in mine if s.header is not None)
    by_manager: dict[str, list[float]] = {}
    header_kid: dict[str, str] = {}
    for s in mine:
        if s.header is None:
            continue
        kid = header_kid.get(s.header)
        if kid is None:
            kid = header_kid[s.header] = kid_of_header(s.header)
        by_manager.setdefault(run.kid_manager.get(kid, "?"), []).append(s.latency * 1000)
    for values in by_manager.values():
        values.sort()
    return {
        "requests": len(mine),
        "failed": sum(1 for s in mine if s.error is not None),
        "errors": Counter(s.error for s in mine if s.error is not None).most_common(5),
        "rate": len(ok) / (hi - lo),
        "p50": percentile(ok, 0.5),
        "p99": percentile(ok, 0.99),
        "max": ok[-1] if ok else float("nan"),
        "kids": kids,
        "by_manager": by_manager,
    }


def report(args: argparse.Namespace, r: dict[str, Any]) -> str:
    run: Run = r["run"]
    steady, swap = phase_stats(run, "steady"), phase_stats(run, "swap")
    ratio = swap["p99"] / steady["p99"]
    applied = [
        (v, run.applied_at[v] - sent, km) for v, sent, km in run.applies if v in run.applied_at
    ]
    same_steady = percentile(steady["by_manager"].get("default", []), 0.99)
    same_swap = percentile(swap["by_manager"].get("default", []), 0.99)
    apply_ms = sorted(d * 1000 for _, d, _ in applied)
    raw = r["raw_http_digests"]
    lines = [
        f"Command: `.venv/bin/python benchmarks/hot_swap.py --duration {args.duration:g} "
        f"--steady {args.steady:g} --clients {args.clients}`",
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; every process on 127.0.0.1.",
        "",
        "| phase | seconds | issued | failed | JWT-SVIDs/s | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, st, secs in (("steady", steady, args.steady), ("swap", swap, args.duration)):
        lines.append(
            f"| {name} | {secs:g} | {st['requests'] - st['failed']} | {st['failed']} | "
            f"{st['rate']:.0f} | {st['p50']:.1f} | {st['p99']:.1f} | {st['max']:.1f} |"
        )
    lines += [
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        f"| failed issuances = 0 | {steady['failed'] + swap['failed']} (server counted "
        f"{r['server_failures']:.0f}) | {'yes' if steady['failed'] + swap['failed'] == 0 else 'NO'} |",
        f"| swap p99 <= 2x steady p99 | {swap['p99']:.1f} / {steady['p99']:.1f} ms = {ratio:.2f}x "
        f"| {'yes' if ratio <= 2 else 'NO'} |",
        f"| same, default-signed issuances only | {same_swap:.1f} / {same_steady:.1f} ms = "
        f"{same_swap / same_steady:.2f}x | {'yes' if same_swap / same_steady <= 2 else 'NO'} |",
        f"| HTTP issuance >= 0.5x raw signing | steady {steady['rate']:.0f}/s vs raw "
        f"{raw:.0f}/s = {steady['rate'] / raw:.3f}x (swap phase {swap['rate'] / raw:.3f}x) "
        f"| {'yes' if steady['rate'] / raw >= 0.5 else 'NO'} |",
        f"| in-process issuance >= 0.5x raw signing | {r['inproc']:.0f}/s vs raw "
        f"{r['raw_inproc_digests']:.0f}/s = {r['inproc'] / r['raw_inproc_digests']:.3f}x "
        f"| {'yes' if r['inproc'] / r['raw_inproc_digests'] >= 0.5 else 'NO'} |",
        "",
        f"Config writes in the swap phase: {run.swap_writes}; server counted "
        f"{r['swaps']:.0f} hot swaps, {r['nacks']:.0f} NACKs; "
        f"{len(applied)} versions seen applied; apply latency (PUT sent -> `applied_at` on the server) "
        f"p50 {percentile(apply_ms, 0.5):.0f} ms, max {apply_ms[-1] if apply_ms else float('nan'):.0f} ms.",
        "",
        "CPU per process, in cores (the machine has "
        f"{os.cpu_count()}): "
        + "; ".join(
            f"{phase}: " + ", ".join(f"{name} {cores:.2f}" for name, cores in usage.items())
            for phase, usage in run.cpu.items()
        ),
        "",
        "Issuance latency by the key manager that signed (kid -> manager from /v1/status):",
        "",
        "| phase | key manager | issued | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name, st in (("steady", steady), ("swap", swap)):
        for km, values in sorted(st["by_manager"].items()):
            lines.append(
                f"| {name} | {km} | {len(values)} | {percentile(values, 0.5):.1f} | "
                f"{percentile(values, 0.99):.1f} |"
            )
    lines += [
        "",
        "JWT kids used (rotations): "
        + "; ".join(
            f"{name}: "
            + ", ".join(
                f"{kid[:12]}… ({run.kid_manager.get(kid, '?')}, {n})"
                for kid, n in st["kids"].items()
            )
            for name, st in (("steady", steady), ("swap", swap))
        ),
        "",
        f"Server-side mean sign time: {r['sign_means']}.",
        "",
        f"Raw signing baseline (one thread, the {r['n_http_digests']} sampled digests the server "
        f"signed): {raw:.0f}/s. In-process `Issuer.issue_jwt` (default key manager, one thread): "
        f"{r['inproc']:.0f}/s vs raw {r['raw_inproc_digests']:.0f}/s on its own digests.",
    ]
    errors = steady["errors"] + swap["errors"]
    if errors:
        lines += ["", "Errors: " + "; ".join(f"{n}x {e}" for e, n in errors)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=60.0, help="swap phase, seconds")
    parser.add_argument("--steady", type=float, default=30.0, help="steady phase, seconds")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--baseline-seconds", type=float, default=3.0)
    parser.add_argument("--profile", action="store_true", help="cProfile the in-process issuer")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        env = start_env(tmp)
        print(
            f"pids: tds {env.tds.pid}, control plane {env.cp.pid}, key service "
            f"{env.keyservice.pid}, this {os.getpid()}",
            file=sys.stderr,
            flush=True,
        )
        try:
            run = asyncio.run(drive(env, args.clients, args.warmup, args.steady, args.duration))
            metrics = tds_metrics(env.tds_socket)
        finally:
            env.stop()
        sign_means = ", ".join(
            f"{k.split(chr(34))[1]} {metrics[k] / metrics[k.replace('_sum', '_count')] * 1e6:.0f} µs"
            for k in metrics
            if k.startswith("tds_sign_seconds_sum") and metrics[k.replace("_sum", "_count")]
        )
        print(f"load done: {len(run.samples)} requests", file=sys.stderr, flush=True)

        # Baselines after the processes are gone, so they have the machine to themselves.
        server = in_process_issuer(tmp)
        inproc_digests: list[bytes] = []
        issue_rate(server, 0.5, inproc_digests)  # warm up
        raw_http, raw_inproc, inproc = [], [], []
        for _ in range(3):  # interleaved rounds: drift hits all three alike
            raw_http.append(raw_sign_rate(run.digests[:5000], args.baseline_seconds))
            raw_inproc.append(raw_sign_rate(inproc_digests, args.baseline_seconds))
            inproc.append(issue_rate(server, args.baseline_seconds))
        if args.profile:
            print(profile_issuer(server, 20000), file=sys.stderr)
            print(breakdown(server), file=sys.stderr)
        server.close()

    results = {
        "run": run,
        "raw_http_digests": statistics.median(raw_http),
        "raw_inproc_digests": statistics.median(raw_inproc),
        "inproc": statistics.median(inproc),
        "n_http_digests": min(5000, len(run.digests)),
        "server_failures": sum(v for k, v in metrics.items() if k.startswith("tds_svid_failures")),
        "swaps": metrics.get("tds_key_manager_swaps_total", 0),
        "nacks": metrics.get("tds_config_nacks_total", 0),
        "sign_means": sign_means or "n/a",
    }
    print(report(args, results))


if __name__ == "__main__":
    main()
