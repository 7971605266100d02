"""`make run`: the main job on the embedded defaults, narrated.

Starts the control plane on SQLite, creates a trust domain and a deployment, applies the vendor
seed's KeyManager document with spirlctl, and shows the stored version and its history. Every
step prints the command a user would type. State lives in ./.run/ (wiped at each start).
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

RUN_DIR = Path(".run")
BIN = Path(sys.executable).parent

SEED_KEY_MANAGER = """\
section: KeyManager
schema: v1
spec:
  extensions:
    azureKeyVault:
      vaultURL: "https://my-key-vault.vault.azure.net/"
"""


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


class Demo:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env = dict(os.environ)

    # -- processes ----------------------------------------------------------------------------

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
        """Start a process that announces itself with one JSON line on stdout."""
        log = open(self.run_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env={**self.env, **(env or {})},
        )
        log.close()
        self.processes.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        try:
            info: dict[str, Any] = json.loads(line)
        except ValueError as exc:
            raise SystemExit(f"{name} did not start; see {self.run_dir / (name + '.log')}") from exc
        print(f"   started {name} (pid {proc.pid}); log: {self.run_dir / (name + '.log')}")
        return info

    def stop_all(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

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

    say("2. Create a trust domain, a deployment and a cluster")
    td = demo.run_json("spirlctl", "trust-domain", "create", "example.org")
    print(f"$ spirlctl trust-domain create example.org            -> {td['id']}")
    tdd = demo.run_json(
        "spirlctl", "trust-domain", "deployment", "create", "prod", "--trust-domain", td["id"]
    )
    print(f"$ spirlctl trust-domain deployment create prod ...    -> {tdd['id']}")
    cluster = demo.run_json(
        "spirlctl", "cluster", "create", "east", "--trust-domain-deployment", tdd["id"]
    )
    print(f"$ spirlctl cluster create east ...                    -> {cluster['id']}")

    say("3. Apply the vendor's KeyManager document (key-manager.yaml)")
    doc = demo.run_dir / "key-manager.yaml"
    doc.write_text(SEED_KEY_MANAGER)
    print(SEED_KEY_MANAGER.rstrip())
    demo.run("spirlctl", "config", "set", "trust-domain-deployment", "--id", tdd["id"], str(doc))

    say("4. A bad document is refused with every error at once; nothing is stored")
    bad = (
        SEED_KEY_MANAGER.replace("https://", "http://")
        + "      keyTags: {'azure:team': identity}\n"
    )
    demo.run(
        "spirlctl",
        "config",
        "set",
        "trust-domain-deployment",
        "--id",
        tdd["id"],
        "-",
        input_text=bad,
        check=False,
    )

    say("5. The stored version and its history")
    demo.run("spirlctl", "config", "get", "trust-domain-deployment", "--id", tdd["id"])
    demo.run("spirlctl", "config", "history", "trust-domain-deployment", "--id", tdd["id"])
    demo.run("spirlctl", "audit", "list", "--limit", "5")
    return {
        "td": td["id"],
        "tdd": tdd["id"],
        "cluster": cluster["id"],
        "token": token,
        "url": info["url"],
    }


def main() -> int:
    if RUN_DIR.exists():
        shutil.rmtree(RUN_DIR)
    RUN_DIR.mkdir(parents=True)
    demo = Demo(RUN_DIR.resolve())
    try:
        control_plane_stage(demo)
        say("Done. Logs and state are in ./.run/")
    except KeyboardInterrupt:
        return 130
    finally:
        demo.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
