"""Azure Key Vault key manager against the loopback Key Vault emulator (one process).

    .venv/bin/python benchmarks/keyvault_sign.py

Part 1, overhead: the same EC-HSM P-256 key signs the same random SHA-256 digests through
`AzureKeyVaultKeyManager.sign_digest` and through a bare SDK `CryptographyClient.sign`
(same credential type, same TLS settings), in interleaved blocks so drift hits both alike.
The emulator's sign limit is lifted for this part. Reports p50/p99/mean per call and the
ratios (goal: manager <= 1.15x the bare SDK).

Part 2, sustained issuance above the sign limit: an in-process trust domain server whose key
manager is the Azure Key Vault manager issues JWT-SVIDs from `--threads` threads without
pause for `--duration` seconds, with the emulator at the service limit (default 2,000 signs
per 10 s, Azure's published figure; `--limit-sign` / `--limit-window` change it). First a
short burst with the limit lifted shows the offered rate is above the limit. Reports
issued, errors surfaced to the caller (goal 0), 429 answers ridden out by the manager
(retries per call, the most in one call; a call backs off for at most its 30 s deadline),
throughput vs the limit, and latency. Prints a Markdown report.

The emulator sends each answer in one write (buffered handler, TCP_NODELAY); before that fix
every answer stalled ~40 ms on Nagle + delayed ACK, which hid what part 1 compares.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import secrets
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm

from controlplane.emulators.keyvault import EmulatorProcess, start_emulator
from controlplane.keymanagers.azure_key_vault import AzureKeyVaultKeyManager
from controlplane.keymanagers.base import HashAlgorithm, KeyType, SigningAlgorithm

TD = "bench.example.org"
APP = str(uuid.UUID(int=2))
ROLES = ["Key Vault Crypto Officer", "Key Vault Crypto User"]
ES256 = SigningAlgorithm(HashAlgorithm.SHA256)
UNLIMITED = 1_000_000


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class Retries:
    """The manager's `sleep`: counts back-off waits per calling thread, then really sleeps."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self._local.count = self.count() + 1
        with self._lock:
            self.waits.append(seconds)
        time.sleep(seconds)

    def count(self) -> int:
        return int(getattr(self._local, "count", 0))


@dataclass
class Setup:
    emu: EmulatorProcess
    secret_file: Path
    secret: str
    retries: Retries = field(default_factory=Retries)

    def manager(self, server_id: str) -> AzureKeyVaultKeyManager:
        config = {
            "vaultURL": self.emu.vault_url,
            "credentials": {
                "clientSecret": {
                    "tenantID": self.emu.tenant_id,
                    "clientID": APP,
                    "clientSecretFile": str(self.secret_file),
                }
            },
        }
        return AzureKeyVaultKeyManager(
            config,
            trust_domain=TD,
            server_id=server_id,
            connection_verify=self.emu.ca_file,
            authority_host=self.emu.authority_host,
            sleep=self.retries,
        )

    def credential(self) -> ClientSecretCredential:
        return ClientSecretCredential(
            self.emu.tenant_id,
            APP,
            self.secret,
            authority=self.emu.authority_host,
            disable_instance_discovery=True,
            connection_verify=self.emu.ca_file,
        )


def start(tmp: Path) -> Setup:
    emu = start_emulator(
        tmp / "kv",
        principals={APP: ROLES},
        limits={"hsm_key": UNLIMITED, "hsm_create": 1000},
        log_level="WARNING",
    )
    secret = secrets.token_urlsafe(16)
    emu.control.add_principal(APP, client_secret=secret)
    secret_file = tmp / "client-secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    return Setup(emu, secret_file, secret)


# --- part 1: overhead -----------------------------------------------------------------------


def timed(fn: Callable[[bytes], Any], digests: list[bytes], out: list[float]) -> None:
    for d in digests:
        t = time.perf_counter()
        fn(d)
        out.append(time.perf_counter() - t)


def overhead(setup: Setup, rounds: int, block: int) -> dict[str, Any]:
    manager = setup.manager("bench-overhead")
    manager.generate_key("jwt-overhead", KeyType.EC_P256)
    credential = setup.credential()
    keys = KeyClient(
        setup.emu.vault_url,
        credential,
        verify_challenge_resource=False,
        connection_verify=setup.emu.ca_file,
    )
    key = keys.get_key(manager.key_name("jwt-overhead"))
    bare = CryptographyClient(
        key, credential, verify_challenge_resource=False, connection_verify=setup.emu.ca_file
    )

    def via_manager(d: bytes) -> Any:
        return manager.sign_digest("jwt-overhead", d, ES256)

    def via_sdk(d: bytes) -> Any:
        return bare.sign(SignatureAlgorithm.es256, d)

    digests = [secrets.token_bytes(32) for _ in range(block)]
    warm: list[float] = []
    timed(via_manager, digests[:50], warm)  # tokens, TLS sessions, caches
    timed(via_sdk, digests[:50], warm)
    m: list[float] = []
    s: list[float] = []
    for i in range(rounds):
        order = [(via_manager, m), (via_sdk, s)]
        for fn, out in order if i % 2 == 0 else reversed(order):
            timed(fn, digests, out)
    manager.close()
    bare.close()
    keys.close()
    credential.close()
    m_ms = sorted(x * 1000 for x in m)
    s_ms = sorted(x * 1000 for x in s)
    return {
        "n": len(m_ms),
        "manager": (percentile(m_ms, 0.5), percentile(m_ms, 0.99), statistics.fmean(m_ms)),
        "sdk": (percentile(s_ms, 0.5), percentile(s_ms, 0.99), statistics.fmean(s_ms)),
    }


# --- part 2: sustained issuance -------------------------------------------------------------


class ThrottleLog(logging.Handler):
    """Counts the manager's 'answered 429' warnings (one per back-off)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.statuses: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if "answered" in record.msg and len(record.args or ()) >= 2:
            self.statuses[str(record.args[1])] += 1  # type: ignore[index]


def in_process_server(setup: Setup) -> Any:
    from controlplane.keymanagers import key_manager_digest
    from controlplane.trust_domain_server.clock import SystemClock
    from controlplane.trust_domain_server.server import TrustDomainServer

    spec = {"extensions": {"azureKeyVault": {"vaultURL": setup.emu.vault_url}}}
    server = TrustDomainServer(
        TD, SystemClock(), lambda _spec: setup.manager("bench-issuer"), key_manager_digest
    )
    document = {"section": "KeyManager", "schema": "v1", "spec": spec}
    config = {"version": 1, "sections": {"KeyManager": {"document": document}}}
    if not server.apply_config(config):  # check(): probe key, sign, delete
        raise RuntimeError(f"in-process server did not apply its config: {server.error}")
    server.rotate()  # JWT and X.509 CA keys in the vault
    return server


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    retries_per_call: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


def issue_for(server: Any, retries: Retries, seconds: float, threads: int) -> tuple[Load, float]:
    load = Load()
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def worker(i: int) -> None:
        sid = f"spiffe://{TD}/bench/w{i}"
        lat: list[float] = []
        per_call: Counter[int] = Counter()
        errors: Counter[str] = Counter()
        while time.perf_counter() < stop_at:
            before = retries.count()
            t = time.perf_counter()
            try:
                server.issuer.issue_jwt(sid, ["bench"])
            except Exception as exc:  # anything surfacing to the caller is the failure we count
                errors[f"{type(exc).__name__}: {str(exc)[:160]}"] += 1
                continue
            lat.append(time.perf_counter() - t)
            per_call[retries.count() - before] += 1
        with lock:
            load.latencies += lat
            load.retries_per_call.update(per_call)
            load.errors.update(errors)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return load, time.perf_counter() - started


def sustained(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    server = in_process_server(setup)
    handler = ThrottleLog()
    km_log = logging.getLogger("controlplane.keymanagers.azure_key_vault")
    km_log.addHandler(handler)
    km_log.setLevel(logging.WARNING)
    km_log.propagate = False  # one warning per back-off: count them, do not print them
    try:
        burst, burst_secs = issue_for(server, setup.retries, args.burst, args.threads)
        # "HSM key, all other transactions" (sign, get, ...) at Azure's figure for EC keys.
        setup.emu.control.set_limits(window_seconds=args.limit_window, hsm_key=args.limit_sign)
        waits_before = len(setup.retries.waits)
        load, secs = issue_for(server, setup.retries, args.duration, args.threads)
        waits = setup.retries.waits[waits_before:]
    finally:
        km_log.removeHandler(handler)
        setup.emu.control.set_limits(hsm_key=UNLIMITED)
        server.close()
    lat = sorted(x * 1000 for x in load.latencies)
    return {
        "offered": len(burst.latencies) / burst_secs,
        "burst_errors": sum(burst.errors.values()),
        "issued": len(lat),
        "seconds": secs,
        "rate": len(lat) / secs,
        "limit_rate": args.limit_sign / args.limit_window,
        "errors": load.errors,
        "statuses": handler.statuses,
        "waits": waits,
        "retries_per_call": load.retries_per_call,
        "p50": percentile(lat, 0.5),
        "p99": percentile(lat, 0.99),
        "max": lat[-1] if lat else float("nan"),
    }


# --- report ---------------------------------------------------------------------------------


def report(args: argparse.Namespace, o: dict[str, Any], s: dict[str, Any]) -> str:
    (m50, m99, mmean), (s50, s99, smean) = o["manager"], o["sdk"]
    r50, r99, rmean = m50 / s50, m99 / s99, mmean / smean
    errors = sum(s["errors"].values())
    most = max(s["retries_per_call"]) if s["retries_per_call"] else 0
    throttled_calls = sum(n for k, n in s["retries_per_call"].items() if k > 0)
    flags = " ".join(
        f"--{k.replace('_', '-')}"
        if isinstance(v, bool)
        else f"--{k.replace('_', '-')} {v:g}"
        if isinstance(v, float)
        else f"--{k.replace('_', '-')} {v}"
        for k, v in vars(args).items()
        if v is not False
    )
    lines = [
        f"Command: `.venv/bin/python benchmarks/keyvault_sign.py {flags}`",
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; emulator process on 127.0.0.1 (HTTPS).",
        "",
        f"Part 1: {o['n']} signs each, EC-HSM P-256, ES256, interleaved blocks of {args.block}.",
        "",
        "| path | p50 ms | p99 ms | mean ms |",
        "|---|---|---|---|",
        f"| bare SDK `CryptographyClient.sign` | {s50:.2f} | {s99:.2f} | {smean:.2f} |",
        f"| `AzureKeyVaultKeyManager.sign_digest` | {m50:.2f} | {m99:.2f} | {mmean:.2f} |",
        f"| ratio manager / SDK | {r50:.3f}x | {r99:.3f}x | {rmean:.3f}x |",
        "",
        f"Part 2: JWT-SVIDs through an in-process trust domain server on the Key Vault manager, "
        f"{args.threads} threads, {s['seconds']:.1f} s at a sign limit of {args.limit_sign} per "
        f"{args.limit_window:g} s ({s['limit_rate']:.0f}/s).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| offered rate (same threads, limit lifted, {args.burst:g} s) | {s['offered']:.0f}/s "
        f"({s['offered'] / s['limit_rate']:.1f}x the limit) |",
        f"| issued | {s['issued']} ({s['rate']:.0f}/s = {s['rate'] / s['limit_rate']:.2f}x the "
        "limit) |",
        f"| errors surfaced to the caller | {errors} |",
        f"| 429/503 answers ridden out (manager back-offs) | {sum(s['statuses'].values())} "
        f"({dict(s['statuses'])}) |",
        f"| calls that backed off at least once | {throttled_calls} |",
        f"| most back-offs in one call (bound: the 30 s sign deadline) | {most} |",
        "| back-off waits (Retry-After) | "
        + (
            f"min {min(s['waits']):.0f} s, median {statistics.median(s['waits']):.0f} s, "
            f"max {max(s['waits']):.0f} s"
            if s["waits"]
            else "none"
        )
        + " |",
        f"| issuance latency p50 / p99 / max | {s['p50']:.1f} / {s['p99']:.0f} / "
        f"{s['max']:.0f} ms |",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        f"| manager overhead <= 1.15x bare SDK | p50 {r50:.3f}x, p99 {r99:.3f}x, mean "
        f"{rmean:.3f}x | {'yes' if max(r50, rmean) <= 1.15 else 'NO'} |",
        f"| no error surfaced above the sign limit | {errors} errors, {s['issued']} issued | "
        f"{'yes' if errors == 0 and s['offered'] > s['limit_rate'] else 'NO'} |",
    ]
    if errors:
        lines += ["", "Errors: " + "; ".join(f"{n}x {e}" for e, n in s["errors"].most_common(5))]
    if s["burst_errors"]:
        lines += ["", f"Errors during the unthrottled burst: {s['burst_errors']}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10, help="part 1: interleaved rounds")
    parser.add_argument("--block", type=int, default=200, help="part 1: signs per block")
    parser.add_argument("--threads", type=int, default=16, help="part 2: issuing threads")
    parser.add_argument("--duration", type=float, default=30.0, help="part 2: seconds")
    parser.add_argument("--burst", type=float, default=3.0, help="part 2: unthrottled seconds")
    parser.add_argument("--limit-sign", type=int, default=2000)
    parser.add_argument("--limit-window", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

    with tempfile.TemporaryDirectory() as tmpdir:
        setup = start(Path(tmpdir))
        try:
            o = overhead(setup, args.rounds, args.block)
            print(f"part 1 done: {o}", file=sys.stderr, flush=True)
            s = sustained(setup, args)
        finally:
            setup.emu.stop()
    print(report(args, o, s))


if __name__ == "__main__":
    main()
