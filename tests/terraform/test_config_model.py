"""The whole config model with the real Terraform CLI: the three scope resources, the
non-authoritative `spirl_config_section` (and what happens when it is mixed with an authoritative
one), the data sources, a join token that bootstraps a real `spirl-tds`, import by name, and the
control plane's refusal to delete a cluster a server joined, surfaced as such.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tf_harness import Terraform

from support.api import ok
from support.tds import SimClock, start_tds, wait_for

pytestmark = [pytest.mark.terraform, pytest.mark.e2e, pytest.mark.xdist_group("tf-model")]

TD = "model.test"
KL = "section: KeyLifecycle\\nschema: v1\\nspec: {{jwtKeyTTL: {ttl}}}\\n"
KM = "section: KeyManager\\nschema: v1\\nspec: {}\\n"

RESOURCES = f"""
resource "spirl_trust_domain" "td" {{
  name = "{TD}"
}}
resource "spirl_trust_domain_deployment" "prod" {{
  name            = "prod"
  trust_domain_id = spirl_trust_domain.td.id
}}
resource "spirl_cluster" "east" {{
  name                       = "east"
  trust_domain_deployment_id = spirl_trust_domain_deployment.prod.id
}}
resource "spirl_cluster" "west" {{
  name                       = "west"
  trust_domain_deployment_id = spirl_trust_domain_deployment.prod.id
}}
resource "spirl_trust_domain_config" "td" {{
  trust_domain_id = spirl_trust_domain.td.id
  sections        = {{ KeyLifecycle = "{KL.format(ttl="12h")}" }}
}}
# An empty map: the resource keeps the deployment scope empty.
resource "spirl_trust_domain_deployment_config" "prod" {{
  trust_domain_deployment_id = spirl_trust_domain_deployment.prod.id
  sections                   = {{}}
}}
resource "spirl_config_section" "west_key_manager" {{
  scope    = "cluster"
  scope_id = spirl_cluster.west.id
  section  = "KeyManager"
  yaml     = "{KM}"
"""
# Mixed on purpose on the west cluster, as the docs say not to: the authoritative resource owns
# the scope, the section resource adds KeyManager to it (after it, so the first apply works).
MIXED = f"""  depends_on = [spirl_cluster_config.west]
}}
resource "spirl_cluster_config" "west" {{
  cluster_id = spirl_cluster.west.id
  sections   = {{ KeyLifecycle = "{KL.format(ttl="6h")}" }}
}}
"""
# For the import check: the section resource alone on west, an empty config scope on east.
UNMIXED = """}
resource "spirl_cluster_config" "east" {
  cluster_id = spirl_cluster.east.id
  sections   = {}
}
"""

DATA = """
resource "spirl_join_token" "east" {
  trust_domain_deployment_id = spirl_trust_domain_deployment.prod.id
  ttl                        = "10m"
}
resource "spirl_join_token" "spare" {
  trust_domain_deployment_id = spirl_trust_domain_deployment.prod.id
}
data "spirl_trust_domain_deployment" "prod" {
  name            = "prod"
  trust_domain_id = spirl_trust_domain.td.id
  depends_on      = [spirl_trust_domain_deployment.prod]
}
data "spirl_cluster" "east" {
  name                       = "east"
  trust_domain_deployment_id = data.spirl_trust_domain_deployment.prod.id
  depends_on                 = [spirl_cluster.east]
}
data "spirl_effective_config" "west" {
  trust_domain_deployment_id = spirl_trust_domain_deployment.prod.id
  cluster_id                 = spirl_cluster.west.id
  depends_on = [spirl_config_section.west_key_manager, spirl_trust_domain_config.td]
}
data "spirl_servers" "prod" {
  trust_domain_deployment_id = spirl_trust_domain_deployment.prod.id
}
output "token" {
  value     = spirl_join_token.east.token
  sensitive = true
}
output "spare_token" {
  value     = spirl_join_token.spare.token
  sensitive = true
}
output "deployment_by_name" {
  value = data.spirl_trust_domain_deployment.prod.id
}
output "cluster_by_name" {
  value = data.spirl_cluster.east.id
}
output "effective" {
  value = data.spirl_effective_config.west
}
output "servers" {
  value = data.spirl_servers.prod.servers
}
"""

IMPORTS = {
    "spirl_trust_domain.td": TD,
    "spirl_trust_domain_deployment.prod": f"{TD}/prod",
    "spirl_cluster.east": f"{TD}/prod/east",
    "spirl_cluster.west": f"{TD}/prod/west",
    "spirl_trust_domain_config.td": TD,
    "spirl_trust_domain_deployment_config.prod": f"{TD}/prod",
    "spirl_cluster_config.east": f"{TD}/prod/east",
    "spirl_config_section.west_key_manager": f"cluster/{TD}/prod/west/KeyManager",
}


def outputs(tf: Terraform) -> dict[str, Any]:
    return {k: v["value"] for k, v in json.loads(tf.state())["outputs"].items()}


def test_config_model(tmp_path: Path, shared_control_plane: Any) -> None:
    cp = shared_control_plane
    work = tmp_path / "work"
    work.mkdir()
    tf = Terraform.isolated(tmp_path, work, cp.env())
    tf.write(RESOURCES + MIXED + DATA)
    tf.init()
    applied = tf.apply()
    assert "(sensitive value)" in applied.output or "token = <sensitive>" in applied.output
    out = outputs(tf)
    assert out["token"].startswith("spirljt_") and out["token"] not in applied.output
    tdd = out["deployment_by_name"]
    with cp.client() as admin:
        east = ok(admin.get("/v1/clusters", params={"trust_domain_deployment_id": tdd}))["items"]
        ids = {c["name"]: c["id"] for c in east}
        assert out["cluster_by_name"] == ids["east"]
        assert ok(admin.get(f"/v1/config/trust-domain-deployment/{tdd}"))["version"] == 0
    # The west cluster's servers: KeyLifecycle from the cluster beats the trust domain's, and
    # KeyManager comes from the section resource.
    sections = out["effective"]["sections"]
    assert (
        sections["KeyLifecycle"]["scope"] == "cluster" and "6h" in sections["KeyLifecycle"]["yaml"]
    )
    assert sections["KeyManager"]["scope_id"] == ids["west"]
    assert out["servers"] == []

    # Every resource imports by name: a second configuration finds them all, with no change.
    check_imports_by_name(tmp_path, cp)

    # The join token from Terraform bootstraps a real server in the east cluster.
    clock = SimClock(tmp_path / "clock")
    tds = start_tds(
        cp,
        tdd_id=tdd,
        cluster_id=ids["east"],
        tmp=tmp_path,
        name="east-1",
        clock=clock,
        join=False,
        extra_args=["--join-token", out["token"]],
    )
    try:
        with cp.client() as admin:
            wait_for(
                lambda: [
                    s
                    for s in ok(admin.get(f"/v1/trust-domain-deployments/{tdd}/servers"))["items"]
                    if s["health"] == "HEALTHY" and s["applied_version"] == s["desired_version"]
                ],
                timeout=60,
                what="the server's first status report",
            )
    finally:
        tds.stop()

    # Mixed resources on one scope: the authoritative one warns about the section it did not
    # write, and removes it ...
    applied = tf.apply()
    flat = " ".join(applied.output.split())
    assert f"Sections added to cluster {ids['west']} outside spirl_cluster_config" in flat
    assert "cannot be mixed with spirl_config_section on the same scope" in flat
    (server,) = outputs(tf)["servers"]
    assert server["id"] == tds.server_id and server["cluster_id"] == ids["east"]
    assert server["state"] == server["health"] == "HEALTHY"
    assert server["applied_version"] == server["desired_version"]
    assert server["key_manager"] == "default"
    # ... and the next plan puts it back: they never converge.
    res = tf.plan_exit()
    assert res.returncode == 2, str(res)
    assert "spirl_config_section.west_key_manager will be created" in res.output

    # A cluster a server joined cannot be deleted: the control plane's reason, clearly.
    flat = tf.fails("destroy", "-input=false", "-auto-approve")
    assert f"Cannot delete the cluster {ids['east']}: something still belongs to it" in flat
    assert "registered server" in flat and "Nothing was deleted and the state is unchanged" in flat
    state = tf.ok("state", "list").stdout
    assert "spirl_cluster.east" in state
    # Destroying the join tokens: the unused one is revoked, the used one left (its server
    # stays registered until deregistered).
    assert "spirl_join_token" not in state
    with cp.client() as admin:
        tokens = ok(admin.get(f"/v1/trust-domain-deployments/{tdd}/join-tokens"))["items"]
        assert [t["state"] for t in tokens] == ["used"]
        refused = admin.post(
            "/v1/servers/register",
            json={"name": "late"},
            headers={"Authorization": f"Bearer {out['spare_token']}"},
        )
        assert refused.status_code == 401


def check_imports_by_name(tmp_path: Path, cp: Any) -> None:
    work = tmp_path / "imports"
    work.mkdir()
    tf = Terraform.isolated(tmp_path, work, cp.env())
    blocks = "".join(
        f'import {{\n  to = {to}\n  id = "{name}"\n}}\n' for to, name in IMPORTS.items()
    )
    tf.write(RESOURCES + UNMIXED + blocks)
    tf.init()
    res = tf.plan_exit()
    assert f"Plan: {len(IMPORTS)} to import, 0 to add, 0 to change, 0 to destroy" in res.output, (
        str(res)
    )
