"""The fleet example end to end: the real Terraform CLI, a live control plane and real
`spirl-tds` servers joined with the example's join tokens. One test, in the order a user meets
them: an apply that waits until both servers applied a change; a change both servers refuse
(named, with their reason); the same change under a staged rollout, halted at the canary (the
stage, the reason and the `spirlctl rollout` commands); a stopped server that the wait times out
on (named as pending). Each step is one `terraform apply` (seconds each): the messages' wording
and every other outcome are proven without Terraform in test_rollout_wait.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from tf_harness import Terraform, copy_example, edit

from support.api import ok
from support.controlplane import ControlPlane
from support.tds import SimClock, Tds, start_tds, wait_for

pytestmark = [pytest.mark.terraform, pytest.mark.e2e, pytest.mark.xdist_group("tf-fleet")]

TRUST_DOMAIN = "fleet.example.org"
FAST = ["--long-poll-wait", "1", "--status-interval", "0.5"]
# A KeyManager the servers refuse: its webhook key service does not answer (nothing listens on
# port 9), so the pre-swap check fails and they keep their previous key manager (a NACK).
BAD_KEY_MANAGER = """
resource "spirl_config_section" "key_manager" {
  scope            = "trust-domain-deployment"
  scope_id         = spirl_trust_domain_deployment.prod.id
  section          = "KeyManager"
  wait_for_rollout = true
  timeouts         = { create = "60s" }
  yaml             = <<-YAML
    section: KeyManager
    schema: v1
    spec:
      extensions:
        webhook:
          webhookURL: "http://127.0.0.1:9/keys"
          timeout: "1s"
  YAML
}
"""


def test_fleet_example_waits_for_real_servers(tmp_path: Path, control_plane: ControlPlane) -> None:
    """`control_plane` (conftest.py): one of its own, as the servers need the default staleness
    window and the rollouts must not meet other tests' writes."""
    cp = control_plane
    work = copy_example("fleet", tmp_path)
    env = {
        **cp.env(),
        "TF_VAR_trust_domain": TRUST_DOMAIN,
        "TF_VAR_staged_rollout": "false",
        "TF_VAR_canary_bake": "1s",
        "TF_VAR_rollout_timeout": "90s",
    }
    tf = Terraform.isolated(tmp_path, work, env)
    tf.init()
    api = cp.client()
    servers: list[Tds] = []
    try:
        # No server yet: every config resource is created, nothing to wait for.
        tf.apply()
        deployment = tf.output("deployment_id")
        clusters = json.loads(tf.ok("output", "-json", "cluster_ids").stdout)
        tokens = json.loads(tf.ok("output", "-json", "join_tokens").stdout)
        assert set(tokens) == set(clusters) == {"eu-west", "us-east"}
        td = ok(api.get(f"/v1/trust-domain-deployments/{deployment}"))["trust_domain_id"]

        # Servers join with the example's tokens, one per cluster (eu-west first: the canary).
        clock = SimClock(tmp_path / "clock")
        for name in ("eu-west", "us-east"):
            servers.append(
                start_tds(
                    cp,
                    tdd_id=deployment,
                    cluster_id=clusters[name],
                    tmp=tmp_path,
                    name=name,
                    clock=clock,
                    join=False,
                    extra_args=[*FAST, "--join-token", tokens[name]],
                )
            )
        canary, other = servers
        wait_for(lambda: states(api, deployment) == dict.fromkeys(tokens, "HEALTHY"), 30, "joined")

        # 1. A change waits until both servers applied it.
        main = work / "main.tf"
        edit(main, "jwtKeyTTL: 12h", "jwtKeyTTL: 6h")
        tf.apply()
        for server in servers:  # when apply returned, each server runs it (its own word)
            expected = effective_version(api, deployment, server)
            assert server.status()["applied_version"] == expected
        tf.assert_no_changes()

        # 2. A KeyManager both servers refuse: the apply fails naming each, with its reason.
        (work / "key_manager.tf").write_text(BAD_KEY_MANAGER)
        out = tf.fails("apply", "-input=false", "-auto-approve")
        assert "refused by 2 server(s)" in out
        for name, server in zip(("eu-west", "us-east"), servers, strict=True):
            assert f"server {name} ({server.server_id}) refused it:" in out
        assert "webhook" in out  # the servers' reason
        # A failed create is tainted; as the message says, untaint keeps what was written: the
        # state records the write (no version conflict, nothing planned) ...
        assert "terraform untaint spirl_config_section.<name>" in out
        tf.ok("untaint", "spirl_config_section.key_manager")
        tf.assert_no_changes()
        # ... and removing the section gives the servers a config they apply again.
        (work / "key_manager.tf").unlink()
        tf.apply()

        # 3. Staged: the canary refuses the same KeyManager, the rollout halts there.
        tf.env["TF_VAR_staged_rollout"] = "true"
        tf.apply()
        (work / "key_manager.tf").write_text(BAD_KEY_MANAGER)
        out = tf.fails("apply", "-input=false", "-auto-approve")
        assert "halted" in out and "stage 1/2 canary" in out
        assert f"({canary.server_id}) refused it:" in out
        assert other.server_id not in out  # the other server never got it
        for action in ("promote", "resume", "abort"):
            assert f"spirlctl rollout {action} --trust-domain-deployment {deployment}" in out
        cp.spirlctl("rollout", "abort", "--trust-domain-deployment", deployment)
        (work / "key_manager.tf").unlink()
        tf.apply()

        # 4. A stopped server still counts as reachable (for the staleness window): the wait
        # times out, naming it as pending.
        other.stop()
        tf.env["TF_VAR_rollout_timeout"] = "3s"
        edit(main, "jwtKeyTTL: 6h", "jwtKeyTTL: 5h")
        out = tf.fails("apply", "-input=false", "-auto-approve")
        assert "Timed out after 3s waiting for the rollout of trust-domain" in out
        assert f"({other.server_id})" in out and "pending" in out.lower()
        assert f"spirlctl rollout status trust-domain --id {td} --version" in out
        tf.assert_no_changes()
    finally:
        for server in servers:
            server.stop()
        api.close()


def states(api: httpx.Client, deployment: str) -> dict[str, str]:
    items = ok(api.get(f"/v1/trust-domain-deployments/{deployment}/servers"))["items"]
    return {s["name"]: s["state"] for s in items}


def effective_version(api: httpx.Client, deployment: str, server: Tds) -> int:
    cluster = server.args[server.args.index("--cluster") + 1]
    params = {"trust_domain_deployment_id": deployment, "cluster_id": cluster}
    body: dict[str, Any] = ok(api.get("/v1/effective-config", params=params))
    return int(body["version"])
