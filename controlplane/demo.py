"""`make run`: the main job on the embedded defaults, narrated.

The vendor's migration from the default key manager to Azure Key Vault, live:
the control plane on SQLite, two trust domain servers on the default key manager, the loopback
Key Vault emulator standing in for a Premium vault; `spirlctl config set` hot-swaps both
servers to Azure Key Vault without a restart, the next rotation creates HSM keys in the vault,
and the old keys drain from the bundle when they expire. Every SVID issued along the way is
verified against the bundle of the *other* server. Key lifetimes are 10 minutes and the servers
run on a simulated clock (their hidden --clock-file flag), so the demo takes seconds, not hours.
Every step prints the command a user would type. State lives in ./.run/ (wiped at each start).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controlplane.fleet import key_manager_type
from controlplane.processes import ProcessStartError, start_announced, stop_process

RUN_DIR = Path(".run")
BIN = Path(sys.executable).parent

SEED_KEY_MANAGER = """\
section: KeyManager
schema: v1
spec:
  extensions:
    azureKeyVault:
      vaultURL: "{vault_url}"
      keyTags:
        team: identity
"""

SHORT_LIFETIMES = """\
section: KeyLifecycle
schema: v1
spec:
  x509CATTL: 10m
  jwtKeyTTL: 10m
"""

TRUST_DOMAIN = "example.org"
# The Workload Identity (client id) the servers run as, with the two RBAC roles the vendor asks for.
SERVER_IDENTITY = "5b0e9c3c-2f1a-4d7e-9a51-3c2d1e0f4a6b"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


class Demo:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.stoppers: list[Callable[[], None]] = []
        self.env = dict(os.environ)

    # -- processes ----------------------------------------------------------------------------

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
        """Start a process that announces itself with one JSON line on stdout."""
        log_path = self.run_dir / f"{name}.log"
        try:
            proc, info = start_announced(cmd, log_path=log_path, env={**self.env, **(env or {})})
        except ProcessStartError as exc:
            raise SystemExit(f"{name} did not start: {exc}") from exc
        self.processes.append(proc)
        print(f"   started {name} (pid {proc.pid}); log: {log_path}")
        return info

    def stop_all(self) -> None:
        for stop in self.stoppers:
            stop()
        for proc in reversed(self.processes):
            stop_process(proc)

    # -- commands -----------------------------------------------------------------------------

    def run(
        self, *args: str, show: bool = True, input_text: str | None = None, check: bool = True
    ) -> str:
        shown = " ".join(args)
        if show:
            print(f"$ {shown}", flush=True)
        result = subprocess.run(
            [str(BIN / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            env=self.env,
            input=input_text,
            timeout=120,
        )
        if show:
            sys.stdout.write(result.stdout)
            sys.stdout.write(result.stderr)
        if check and result.returncode != 0:
            raise SystemExit(f"command failed: {shown}\n{result.stderr}")
        return result.stdout

    def run_json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json", show=False))


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


class SimulatedClock:
    """The offset file the demo's servers read their clock from (their hidden --clock-file flag)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0.0
        self.set(0.0)

    def set(self, seconds: float) -> None:
        self.offset = seconds
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(seconds))
        tmp.replace(self.path)
        time.sleep(0.5)  # servers re-read it every 50 ms; the rotator ticks every 0.2 s

    def now(self) -> float:
        return time.time() + self.offset


class Server:
    """A running spirl-tds, reached on its local API's Unix socket (the default listener)."""

    def __init__(self, name: str, info: dict[str, Any]) -> None:
        self.name = name
        self.socket = info["socket"]
        self.server_id = info["server_id"]
        self.pid = info["pid"]

    def _client(self) -> Any:
        import httpx

        return httpx.Client(
            transport=httpx.HTTPTransport(uds=self.socket), base_url="http://tds", timeout=10
        )

    def status(self) -> dict[str, Any]:
        with self._client() as client:
            return client.get("/v1/status").json()  # type: ignore[no-any-return]

    def bundle(self) -> dict[str, Any]:
        with self._client() as client:
            return client.get("/v1/bundle").json()  # type: ignore[no-any-return]

    def jwt_svid(self, path: str, ttl: str = "90s") -> str:
        with self._client() as client:
            response = client.post(
                "/v1/svid/jwt",
                json={
                    "spiffe_id": f"spiffe://{TRUST_DOMAIN}/{path}",
                    "audience": ["demo"],
                    "ttl": ttl,
                },
            )
        response.raise_for_status()
        return str(response.json()["token"])


def control_plane_stage(demo: Demo) -> dict[str, str]:
    say("1. Start the control plane on the embedded SQLite database")
    data = demo.run_dir / "controlplane"
    demo.run("spirl-controlplane", "migrate", "--data-dir", str(data))
    token = demo.run(
        "spirl-controlplane",
        "token",
        "create",
        "--role",
        "admin",
        "--data-dir",
        str(data),
        show=False,
    ).strip()
    print("$ spirl-controlplane token create --role admin   # printed once, stored hashed")
    info = demo.start(
        "controlplane",
        [
            str(BIN / "spirl-controlplane"),
            "serve",
            "--data-dir",
            str(data),
            "--listen",
            "127.0.0.1:0",
        ],
    )
    demo.env.update({"SPIRL_ENDPOINT": info["url"], "SPIRL_TOKEN": token})
    print(f"   export SPIRL_ENDPOINT={info['url']} SPIRL_TOKEN=<admin token>")
    print_console(info["url"], token)

    say("2. Create a trust domain, a deployment and a cluster")
    td = demo.run_json("spirlctl", "trust-domain", "create", TRUST_DOMAIN)
    print(f"$ spirlctl trust-domain create {TRUST_DOMAIN}            -> {td['id']}")
    tdd = demo.run_json(
        "spirlctl", "trust-domain", "deployment", "create", "prod", "--trust-domain", td["id"]
    )
    print(f"$ spirlctl trust-domain deployment create prod ...    -> {tdd['id']}")
    cluster = demo.run_json(
        "spirlctl", "cluster", "create", "east", "--trust-domain-deployment", tdd["id"]
    )
    print(f"$ spirlctl cluster create east ...                    -> {cluster['id']}")
    lifetimes = demo.run_dir / "key-lifecycle.yaml"
    lifetimes.write_text(SHORT_LIFETIMES)
    print("   short key lifetimes so rotation is visible:")
    print("   " + SHORT_LIFETIMES.rstrip().replace("\n", "\n   "))
    demo.run("spirlctl", "config", "set", "trust-domain", "--id", td["id"], str(lifetimes))
    print(f"   watch the migration: {info['url']}/ui/deployments/{tdd['id']}/timeline")
    return {
        "td": td["id"],
        "tdd": tdd["id"],
        "cluster": cluster["id"],
        "url": info["url"],
        "token": token,
    }


def print_console(url: str, token: str) -> None:
    """The web console's address and the token to sign in with (this demo's own admin token,
    wiped with ./.run/ at the next start)."""
    print(f"   web console: {url}/ui/   sign in with the admin token: {token}")


def start_servers(
    demo: Demo, ids: dict[str, str], clock: SimulatedClock, env: dict[str, str]
) -> list[Server]:
    say("4. Two trust domain servers join the deployment (default key manager)")
    servers = []
    for name in ("tds-a", "tds-b"):
        join = demo.run_json(
            "spirlctl", "trust-domain", "deployment", "join-token", "--id", ids["tdd"]
        )
        print(
            f'$ spirlctl trust-domain deployment join-token --id {ids["tdd"]} -o json   -> {{"token": ...}}'
        )
        folder = demo.run_dir / name
        cmd = [
            str(BIN / "spirl-tds"),
            "run",
            "--endpoint",
            ids["url"],
            "--trust-domain-deployment",
            ids["tdd"],
            "--cluster",
            ids["cluster"],
            "--data-dir",
            str(folder),
            "--name",
            name,
            "--key-identifier-file",
            str(folder / "server_id"),
            "--clock-file",
            str(clock.path),
            "--rotate-interval",
            "0.2",
        ]
        print(
            f"$ SPIRL_JOIN_TOKEN=<token> spirl-tds run --endpoint $SPIRL_ENDPOINT "
            f"--trust-domain-deployment {ids['tdd']} --cluster {ids['cluster']} "
            f"--data-dir .run/{name} --key-identifier-file .run/{name}/server_id"
            f"   # local API: .run/{name}/api.sock"
        )
        # The token travels in the environment, not on the command line (`ps` shows that).
        token_env = {**env, "SPIRL_JOIN_TOKEN": join["token"]}
        servers.append(Server(name, demo.start(name, cmd, env=token_env)))
    wait_for(
        lambda: all(s.status().get("applied_version") for s in servers),
        15,
        "servers to apply config",
    )
    demo.run("spirlctl", "trust-domain", "deployment", "servers", "--id", ids["tdd"])
    return servers


def show_keys(server: Server) -> None:
    status = server.status()
    mtype = key_manager_type(status.get("key_manager"))
    print(
        f"   {server.name} (pid {server.pid}): config version {status.get('applied_version')}, "
        f"active key manager {mtype}"
    )
    from controlplane.cli.output import table

    rows = []
    for key in status.get("keys", []):
        rows.append(
            [
                str(key.get("kind")),
                str(key.get("kid")),
                _km_type(key),
                str(key.get("state")),
                str(key.get("not_after", ""))[:19],
            ]
        )
    text = table(rows, ["KIND", "KID", "KEY MANAGER", "STATE", "NOT AFTER"])
    print("\n".join("   " + line for line in text.splitlines()))


def verify(token: str, verifier: Server, clock: SimulatedClock) -> str:
    """Verify a JWT-SVID with PyJWT against the other server's bundle (independent code)."""
    import jwt

    kid = jwt.get_unverified_header(token)["kid"]
    keys = [
        k for k in verifier.bundle()["keys"] if k.get("kid") == kid and k.get("use") == "jwt-svid"
    ]
    if not keys:
        return f"kid {kid} NOT in {verifier.name}'s bundle"
    key = jwt.PyJWK(keys[0])
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["ES256", "ES384", "RS256", "PS256"],
        audience="demo",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    left = claims["exp"] - clock.now()
    state = f"valid for {left:.0f}s more" if left > 0 else "expired"
    return f"signature OK with kid {kid} from {verifier.name}'s bundle ({claims['sub']}, {state})"


def vault_keys(emulator: Any) -> list[Any]:
    from azure.identity import WorkloadIdentityCredential
    from azure.keyvault.keys import KeyClient

    token_file = emulator.write_federated_token(SERVER_IDENTITY)
    credential = WorkloadIdentityCredential(
        tenant_id=emulator.tenant_id,
        client_id=SERVER_IDENTITY,
        token_file_path=str(token_file),
        authority=emulator.authority_host,
        disable_instance_discovery=True,
        connection_verify=emulator.ca_file,
    )
    client = KeyClient(
        emulator.vault_url,
        credential,
        verify_challenge_resource=False,
        connection_verify=emulator.ca_file,
    )
    return list(client.list_properties_of_keys())


def migration_stage(demo: Demo, ids: dict[str, str]) -> None:
    from controlplane.emulators.keyvault.process import start_emulator

    say("3. Prepare Azure resources: a Premium Key Vault (the loopback emulator) and RBAC roles")
    emulator = start_emulator(
        demo.run_dir / "keyvault",
        sku="premium",
        principals={SERVER_IDENTITY: ["Key Vault Crypto Officer", "Key Vault Crypto User"]},
    )
    demo.stoppers.append(emulator.stop)
    print(
        f"   vault {emulator.vault_url} (pid {emulator.pid}); workload identity {SERVER_IDENTITY} has "
        "Key Vault Crypto Officer + Key Vault Crypto User"
    )
    env = emulator.sdk_env(SERVER_IDENTITY)  # Workload Identity token file, authority, CA
    clock = SimulatedClock(demo.run_dir / "clock")
    servers = start_servers(demo, ids, clock, env)
    a, b = servers
    for server in servers:
        show_keys(server)
    first = a.jwt_svid("web")
    print(
        "$ curl --unix-socket .run/tds-a/api.sock -X POST http://tds/v1/svid/jwt "
        '-d \'{"spiffe_id": "spiffe://example.org/web", ...}\''
    )
    print(f"   JWT-SVID #1 from tds-a: {verify(first, b, clock)}")

    say(
        "5. Apply the vendor's KeyManager document: Azure Key Vault becomes active at once, no restart"
    )
    doc = demo.run_dir / "key-manager.yaml"
    doc.write_text(SEED_KEY_MANAGER.format(vault_url=emulator.vault_url))
    print(doc.read_text().rstrip())
    demo.run(
        "spirlctl",
        "config",
        "set",
        "trust-domain-deployment",
        "--id",
        ids["tdd"],
        str(doc),
        "--wait",
    )
    wait_for(lambda: all(_manager_type(s) == "azureKeyVault" for s in servers), 15, "the hot swap")
    demo.run("spirlctl", "trust-domain", "deployment", "servers", "--id", ids["tdd"])
    for server in servers:
        show_keys(server)
    print(
        f"   keys in the vault now: {len(vault_keys(emulator))} (none: a swap creates no key; the "
        "default keys keep signing)"
    )
    second = a.jwt_svid("api")
    print(f"   JWT-SVID #2 from tds-a: {verify(second, b, clock)}")

    say("6. A bad document is refused with every error at once; nothing is stored")
    bad = SEED_KEY_MANAGER.format(vault_url="http://my-key-vault.vault.azure.net/").replace(
        "team: identity", "'azure:team': identity"
    )
    demo.run(
        "spirlctl",
        "config",
        "set",
        "trust-domain-deployment",
        "--id",
        ids["tdd"],
        "-",
        input_text=bad,
        check=False,
    )

    say(
        "7. Time-lapse to the next rotation (half-life): the next keys are made in Key Vault as HSM keys"
    )
    clock.set(5 * 60 + 30)
    wait_for(lambda: len(vault_keys(emulator)) >= 4, 20, "HSM keys in the vault")
    for props in vault_keys(emulator):
        print(f"   {props.id}  tags={dict(sorted((props.tags or {}).items()))}")
    clock.set(8 * 60 + 10)
    third = a.jwt_svid("late")
    print(f"   JWT-SVID #3 from tds-a just before activation: {verify(third, b, clock)}")

    say("8. Activation (5/6 of the lifetime): HSM keys sign; the old keys stay in the bundle")
    clock.set(8 * 60 + 40)
    wait_for(
        lambda: all(_active_types(s) == {"azureKeyVault"} for s in servers), 20, "Azure keys active"
    )
    for server in servers:
        show_keys(server)
    fourth = a.jwt_svid("after")
    print(f"   JWT-SVID #4 from tds-a (Key Vault signed): {verify(fourth, b, clock)}")
    print(f"   JWT-SVID #3 (old key, still outstanding):  {verify(third, b, clock)}")
    signs = [e for e in emulator.control.audit() if e.get("operationName") == "KeySign"]
    print(f"   Key Vault audit log: {len(signs)} KeySign AuditEvent(s)")

    say("9. The old keys expire: they leave the bundle and the default key manager is closed")
    clock.set(10 * 60 + 30)
    wait_for(
        lambda: all("default" not in _bundle_managers(s) for s in servers), 20, "old keys to drain"
    )
    for server in servers:
        show_keys(server)
    print(f"   JWT-SVID #4: {verify(fourth, b, clock)}")
    print(f"   same processes throughout: tds-a pid {a.pid}, tds-b pid {b.pid}")

    say("10. History of the deployment's config and the audit log")
    demo.run("spirlctl", "config", "history", "trust-domain-deployment", "--id", ids["tdd"])
    demo.run("spirlctl", "audit", "list", "--limit", "6")


def _manager_type(server: Server) -> str | None:
    return key_manager_type(server.status().get("key_manager"))


def _active_types(server: Server) -> set[str]:
    return {_km_type(k) for k in server.status().get("keys", []) if k.get("state") == "active"}


def _bundle_managers(server: Server) -> set[str]:
    return {_km_type(k) for k in server.status().get("keys", [])}


def _km_type(key: dict[str, Any]) -> str:
    return str(key_manager_type(key.get("key_manager")))


def keep_running(ids: dict[str, str]) -> None:
    say("Everything keeps running (--keep): look around in the web console; Ctrl-C stops it all")
    print_console(ids["url"], ids["token"])
    print(f"   servers:      {ids['url']}/ui/deployments/{ids['tdd']}")
    print(f"   key timeline: {ids['url']}/ui/deployments/{ids['tdd']}/timeline")
    print(
        f"   CLI:          export SPIRL_ENDPOINT={ids['url']} SPIRL_TOKEN={ids['token']}",
        flush=True,
    )
    while True:
        time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="make run ARGS=...", description="The narrated migration demo (see README)."
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the control plane, servers and vault running after the demo, until Ctrl-C",
    )
    args = parser.parse_args(argv)
    # Ctrl-C, or a plain `kill`, stops everything the demo started (a shell that started the
    # demo in the background may have set SIGINT to be ignored: undo that).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if RUN_DIR.exists():
        shutil.rmtree(RUN_DIR)
    RUN_DIR.mkdir(parents=True)
    demo = Demo(RUN_DIR.resolve())
    try:
        ids = control_plane_stage(demo)
        migration_stage(demo, ids)
        say("Done. Logs and state are in ./.run/")
        if args.keep:
            keep_running(ids)
    except KeyboardInterrupt:
        print("\nstopping everything", flush=True)
        return 0 if args.keep else 130
    finally:
        demo.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
