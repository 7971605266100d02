"""End to end: a staged rollout stops a bad Key Vault document at the canary. A real control
plane, four real spirl-tds servers (the oldest is the canary) and a Key Vault emulator that the
unmodified Azure SDK in the servers talks to, spirlctl for every step.

The bad document passes the servers' pre-swap check (the identity may create keys then) and
fails at the canary's next rotation, after the identity lost its create permission on the vault:
Key Vault evaluates RBAC on every call, so a role assignment removed after the check makes the
next key creation fail with 403 (ForbiddenByRbac). The canary's clock jumps to its rotation
(the servers' hidden --clock-file); the others never get the document and keep issuing.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controlplane.emulators.keyvault import start_emulator

from support.api import make_topology, ok
from support.controlplane import start_control_plane
from support.processes import script
from support.tds import TD, SimClock, Tds, start_tds, verify_jwt, wait_for

pytestmark = pytest.mark.e2e

APP = "tds-workload-app"  # the servers' Workload Identity
TDD = "trust-domain-deployment"
FAST = ["--long-poll-wait", "1", "--status-interval", "0.5"]
POLICY = """\
section: Rollout
schema: v1
spec:
  stages:
    - {{name: canary, servers: 1, bake: {canary_bake}}}
    - {{name: half, percent: 50, bake: 2s}}
"""


def key_manager(vault_url: str | None) -> str:
    spec = {"extensions": {"azureKeyVault": {"vaultURL": vault_url}} if vault_url else {}}
    return json.dumps({"section": "KeyManager", "schema": "v1", "spec": spec}) + "\n"


def test_a_document_failing_at_rotation_halts_at_the_canary_then_abort_promote_and_stages(
    tmp_path: Path,
) -> None:
    cp = start_control_plane(tmp_path)
    vault = start_emulator(
        tmp_path / "vault",
        tenant_dir=tmp_path / "tenant",
        principals={APP: ["crypto-officer", "crypto-user"]},
    )
    servers: list[Tds] = []
    try:
        client = cp.client()
        ids = make_topology(client, TD)
        tdd = ids["tdd"]

        def spirlctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
            return cp.spirlctl(*args, check=check)

        def write(name: str, text: str, *extra: str) -> None:
            path = tmp_path / name
            path.write_text(text)
            spirlctl("config", "set", TDD, "--id", tdd, str(path), *extra)

        def write_and_wait(name: str, text: str) -> subprocess.Popen[str]:
            """`spirlctl config set --wait` in the background: it follows the stages."""
            path = tmp_path / name
            path.write_text(text)
            return subprocess.Popen(
                [
                    script("spirlctl"),
                    "config",
                    "set",
                    TDD,
                    "--id",
                    tdd,
                    str(path),
                    "--wait",
                    "--timeout",
                    "120",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, **cp.env()},
            )

        def rollout() -> dict[str, Any]:
            return ok(client.get(f"/v1/trust-domain-deployments/{tdd}/rollout"))

        def managers() -> dict[str, str]:
            return {
                s.process.announcement["server_id"]: s.status()["key_manager"]["type"]
                for s in servers
            }

        # 6 h keys: the next key is prepared 3 h in. The canary gets a clock of its own.
        write(
            "lifecycle.yaml",
            "section: KeyLifecycle\nschema: v1\nspec:\n  x509CATTL: 6h\n  jwtKeyTTL: 6h\n",
        )
        canary_clock, fleet_clock = (
            SimClock(tmp_path / "canary-clock"),
            SimClock(tmp_path / "clock"),
        )
        for name in "abcd":
            servers.append(
                start_tds(
                    cp,
                    tdd_id=tdd,
                    cluster_id=ids["cluster"],
                    tmp=tmp_path,
                    name=name,
                    clock=canary_clock if name == "a" else fleet_clock,
                    extra_args=FAST,
                    env=vault.sdk_env(APP),
                )
            )
        canary, others = servers[0], servers[1:]
        pids = [s.process.pid for s in servers]

        def states() -> dict[str, str]:
            items = ok(client.get(f"/v1/trust-domain-deployments/{tdd}/servers"))["items"]
            return {s["name"]: s["state"] for s in items}

        wait_for(lambda: states() == dict.fromkeys("abcd", "HEALTHY"), what="four HEALTHY servers")
        write("policy.yaml", POLICY.format(canary_bake="1h"))
        assert rollout()["phase"] == "done"  # the policy itself applies at once

        # 1. The document reaches the canary only; it passes the check and swaps.
        bad = write_and_wait("bad.yaml", key_manager(vault.vault_url))
        wait_for(
            lambda: canary.status()["key_manager"]["type"] == "azureKeyVault",
            what="the canary on Key Vault",
        )
        wait_for(lambda: rollout()["bake_seconds_left"] is not None, what="the canary baking")
        assert all(s.status()["key_manager"]["type"] == "default" for s in others)

        # 2. Its identity loses create; at its next rotation creating a key fails: UNHEALTHY.
        vault.control.set_roles(APP, ["crypto-user"])
        canary_clock.jump_to(timedelta(hours=3, minutes=5))
        wait_for(lambda: rollout()["phase"] == "halted", timeout=30, what="the rollout halted")
        halt = rollout()["halt"]
        assert halt["server_id"] == canary.server_id
        assert "UNHEALTHY after applying" in halt["reason"]
        out, err = bad.communicate(timeout=30)
        assert bad.returncode == 3, (out, err)
        assert "stage 1/3 canary" in out and "halted" in err and canary.server_id in err
        status = spirlctl(
            "rollout", "status", "--trust-domain-deployment", tdd, "--timeout", "0", check=False
        )
        assert status.returncode == 3 and "UNHEALTHY after applying" in status.stderr
        assert [ln.split()[:1] for ln in status.stdout.splitlines()[2:5]] == [
            ["STAGE"],
            ["canary"],
            ["half"],
        ]
        # The others never got it: previous key manager, still issuing.
        for s in others:
            assert s.status()["key_manager"]["type"] == "default"
            verify_jwt(s.jwt("during-halt"), s.bundle(), fleet_clock.now())

        # 3. Abort: the canary returns to its previous key manager (same process).
        out = spirlctl("rollout", "abort", "--trust-domain-deployment", tdd).stdout
        assert "(aborted)" in out
        wait_for(lambda: canary.status()["key_manager"]["type"] == "default", what="canary back")
        wait_for(lambda: states()["a"] == "HEALTHY", what="canary HEALTHY again")
        assert rollout()["phase"] == "aborted"

        # 4. Fixed: the permission is back and the policy bakes for seconds. A retry goes
        # through every stage after its bake time, on its own.
        vault.control.set_roles(APP, ["crypto-officer", "crypto-user"])
        write("policy.yaml", POLICY.format(canary_bake="2s"))
        spirlctl("rollout", "resume", "--trust-domain-deployment", tdd)
        done = spirlctl("rollout", "status", "--trust-domain-deployment", tdd, "--timeout", "120")
        assert "done" in done.stdout
        wait_for(lambda: set(managers().values()) == {"azureKeyVault"}, what="all on Key Vault")
        assert [s.process.pid for s in servers] == pids  # hot swaps, no restart

        # 5. A canary that bakes for an hour: an operator promotes it; `--wait` follows.
        write("policy.yaml", POLICY.format(canary_bake="1h"))
        change = write_and_wait(
            "lifecycle-2.yaml",
            "section: KeyLifecycle\nschema: v1\nspec:\n  x509CATTL: 5h\n  jwtKeyTTL: 5h\n",
        )
        wait_for(lambda: rollout()["bake_seconds_left"] is not None, what="the canary baking")
        spirlctl("rollout", "promote", "--trust-domain-deployment", tdd, "--reason", "looks fine")
        out, err = change.communicate(timeout=120)
        assert change.returncode == 0, (out, err)
        assert "complete: 4/4 applied" in out

        actions = [
            (e["action"], e["actor"])
            for e in reversed(cp.spirlctl_json("audit", "list", "--limit", "100"))
            if e["action"].startswith("rollout.")
        ]
        assert actions[:5] == [
            ("rollout.start", "admin:admin-token"),
            ("rollout.halt", "system:rollout"),
            ("rollout.abort", "admin:admin-token"),
            ("rollout.resume", "admin:admin-token"),
            ("rollout.promote", "system:rollout"),
        ]
        assert ("rollout.promote", "admin:admin-token") in actions[5:]
        metrics = client.get("/metrics").text
        assert f'spirl_rollout_halted{{trust_domain_deployment_id="{tdd}"}} 0' in metrics
        assert "spirl_rollout_halts_total 1" in metrics
    finally:
        for s in servers:
            s.stop()
        vault.stop()
        cp.stop()
