"""Every example, end to end: the real Terraform CLI, the installed provider, a live control plane.

Steps are combined per example (each terraform command costs seconds of provider starts). The
examples share the module's control plane, each with its own trust domain (`trust_domain`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from tf_harness import Terraform, copy_example, edit

from support.api import ok, put_config

pytestmark = [pytest.mark.terraform, pytest.mark.xdist_group("tf-examples")]


def tf_for(
    example: str, tmp_path: Path, control_plane: Any, trust_domain: str
) -> tuple[Terraform, Path]:
    work = copy_example(example, tmp_path)
    env = {**control_plane.env(), "TF_VAR_trust_domain": trust_domain}
    tf = Terraform.isolated(tmp_path, work, env)
    tf.init()
    return tf, work / "main.tf"


def trust_domain_names(api: httpx.Client) -> set[str]:
    return {td["name"] for td in ok(api.get("/v1/trust-domains"))["items"]}


def config(api: httpx.Client, scope: str, scope_id: str) -> dict[str, Any]:
    body: dict[str, Any] = ok(api.get(f"/v1/config/{scope}/{scope_id}"))
    return body


KEY_MANAGER_REFORMATTED = """\
    KeyManager = <<-YAML
      # same document, written differently: comments, flow style, key order, quoting
      schema: 'v1'
      section:   KeyManager
      spec: {extensions: {azureKeyVault: {keyTags: {team: "identity"}, vaultURL: '${var.vault_url}'}}}
    YAML
"""


def test_azure_key_vault_lifecycle(
    tmp_path: Path, shared_control_plane: Any, admin_api: httpx.Client
) -> None:
    control_plane = shared_control_plane
    tf, main = tf_for("azure-key-vault", tmp_path, control_plane, "akv.example.org")
    tf.ok("validate")

    # plan + apply create everything; a second plan is empty.
    assert tf.plan_exit().returncode == 2
    tf.apply()
    cluster_id = tf.output("cluster_id")
    stored = config(admin_api, "cluster", cluster_id)
    assert stored["version"] == 1
    km = stored["sections"]["KeyManager"]["document"]["spec"]["extensions"]["azureKeyVault"]
    assert km == {
        "vaultURL": "https://my-key-vault.vault.azure.net/",
        "keyTags": {"team": "identity"},
    }
    tf.assert_no_changes()

    # Reformatting the YAML is no change.
    text = main.read_text()
    start = text.index("    KeyManager = <<-YAML")
    end = text.index("    YAML\n", start) + len("    YAML\n")
    main.write_text(text[:start] + KEY_MANAGER_REFORMATTED + text[end:])
    tf.assert_no_changes()

    # An edit is an in-place update that writes one new version.
    edit(main, 'team: "identity"', 'team: "platform"')
    res = tf.plan_exit()
    assert res.returncode == 2, str(res)
    assert "update in-place" in res.output and "must be replaced" not in res.output
    tf.apply()
    stored = config(admin_api, "cluster", cluster_id)
    assert stored["version"] == 2
    assert "platform" in stored["sections"]["KeyManager"]["yaml"]
    assert tf.output("config_version") == "2"
    tf.assert_no_changes()

    # A change made behind Terraform's back shows as drift, and plans an update back.
    drift = (
        "section: KeyManager\nschema: v1\nspec:\n  extensions:\n    azureKeyVault:\n"
        "      vaultURL: https://other-vault.vault.azure.net/\n"
    )
    # The vendor page's other path: `spirlctl config set cluster --id <id> key-manager.yaml`.
    control_plane.spirlctl("config", "set", "cluster", "--id", cluster_id, "-", input_text=drift)
    assert config(admin_api, "cluster", cluster_id)["version"] == 3
    res = tf.plan_exit()
    assert res.returncode == 2, str(res)
    assert "changed outside of Terraform" in res.output
    assert "other-vault" in res.output

    # A change between plan and apply: the saved plan fails with a clear conflict, nothing lost.
    tf.ok("plan", "-input=false", "-out=tfplan")
    concurrent = drift.replace("other-vault", "concurrent-vault")
    assert ok(put_config(admin_api, "cluster", cluster_id, concurrent, prune=True))["version"] == 4
    flat = tf.fails("apply", "-input=false", "tfplan")
    assert "version conflict" in flat
    assert "expected version 3" in flat and "version 4" in flat
    assert "terraform apply -refresh-only" in flat
    assert (
        "concurrent-vault"
        in config(admin_api, "cluster", cluster_id)["sections"]["KeyManager"]["yaml"]
    )

    # The advice in the error works: refresh-only takes in the new version, then apply wins.
    tf.apply("-refresh-only")
    assert tf.plan_exit().returncode == 2
    tf.apply()
    stored = config(admin_api, "cluster", cluster_id)
    assert stored["version"] == 5
    assert "platform" in stored["sections"]["KeyManager"]["yaml"]
    tf.assert_no_changes()

    # Import by id (the config resource by its cluster's id): what is imported matches the
    # configuration, so there is nothing to do.
    deployment_id = admin_api.get(f"/v1/clusters/{cluster_id}").json()["trust_domain_deployment_id"]
    tf.ok("state", "rm", "spirl_cluster_config.key_manager", "spirl_cluster.my_cluster")
    tf.ok("state", "rm", "spirl_trust_domain_deployment.prod")
    tf.ok("import", "-input=false", "spirl_cluster_config.key_manager", cluster_id)
    tf.ok("import", "-input=false", "spirl_cluster.my_cluster", cluster_id)
    tf.ok("import", "-input=false", "spirl_trust_domain_deployment.prod", deployment_id)
    tf.assert_no_changes()

    # Destroy removes every section and every object.
    tf.ok("destroy", "-input=false", "-auto-approve")
    assert admin_api.get(f"/v1/clusters/{cluster_id}").status_code == 404
    assert "akv.example.org" not in trust_domain_names(admin_api)


def test_quickstart_lifecycle(
    tmp_path: Path, shared_control_plane: Any, admin_api: httpx.Client
) -> None:
    control_plane = shared_control_plane
    tf, main = tf_for("quickstart", tmp_path, control_plane, "quickstart.example.org")
    tf.apply()
    deployment_id = tf.output("deployment_id")
    td_id = tf.output("trust_domain_id")  # from the data source, looked up by name
    assert td_id.startswith("td-")
    assert admin_api.get(f"/v1/trust-domains/{td_id}").json()["name"] == "quickstart.example.org"
    stored = config(admin_api, "trust-domain-deployment", deployment_id)
    assert stored["sections"]["KeyLifecycle"]["document"]["spec"] == {
        "x509CATTL": "24h",
        "jwtKeyTTL": "12h",
    }
    tf.assert_no_changes()

    # Edit in place.
    edit(main, "jwtKeyTTL: 12h", "jwtKeyTTL: 6h")
    res = tf.plan_exit()
    assert res.returncode == 2 and "update in-place" in res.output, str(res)
    tf.apply()
    stored = config(admin_api, "trust-domain-deployment", deployment_id)
    assert stored["sections"]["KeyLifecycle"]["document"]["spec"]["jwtKeyTTL"] == "6h"

    # A section added behind Terraform's back is removed again: the resource owns the scope.
    resp = admin_api.put(
        f"/v1/config/trust-domain-deployment/{deployment_id}",
        json={"yaml": "section: KeyManager\nschema: v1\nspec: {}\n", "prune": False},
    )
    assert resp.status_code == 200, resp.text
    res = tf.plan_exit()
    assert res.returncode == 2 and "KeyManager" in res.output, str(res)
    tf.apply()
    assert set(config(admin_api, "trust-domain-deployment", deployment_id)["sections"]) == {
        "KeyLifecycle"
    }
    tf.assert_no_changes()

    # Import of plain objects by id.
    tf.ok("state", "rm", "spirl_trust_domain.example")
    tf.ok("import", "-input=false", "spirl_trust_domain.example", td_id)
    tf.assert_no_changes()

    # The token never shows: not in debug logs of Terraform and the provider, not in state.
    tf.env.update(TF_LOG="DEBUG", SPIRL_PROVIDER_LOG_LEVEL="DEBUG")
    res = tf.plan_exit()
    del tf.env["TF_LOG"], tf.env["SPIRL_PROVIDER_LOG_LEVEL"]
    assert res.returncode == 0, str(res)
    assert "configured for http" in res.output  # the provider's own debug log is there
    assert control_plane.admin_token not in res.output
    assert control_plane.admin_token not in (main.parent / "terraform.tfstate").read_text()

    tf.ok("destroy", "-input=false", "-auto-approve")
    assert admin_api.get(f"/v1/trust-domain-deployments/{deployment_id}").status_code == 404
    assert "quickstart.example.org" not in trust_domain_names(admin_api)


def test_shared_keys_lifecycle(
    tmp_path: Path, shared_control_plane: Any, admin_api: httpx.Client
) -> None:
    tf, main = tf_for("shared-keys", tmp_path, shared_control_plane, "shared.example.org")
    work = main.parent
    tf.apply()
    deployment_id = tf.output("deployment_id")
    stored = config(admin_api, "trust-domain-deployment", deployment_id)
    assert set(stored["sections"]) == {"KeyManager", "KeyLifecycle"}
    shared = stored["sections"]["KeyManager"]["document"]["spec"]["extensions"]["azureKeyVault"][
        "sharedKeys"
    ]
    # The regex is built from var.trust_domain (and was checked against its key names).
    assert shared["keyIdExtractionRegex"] == "^spire-shared-example-org-(.+)$"
    assert shared["keyNameTemplate"] == 'spire-{{ .TrustDomain | replace "." "-" }}-{{ .KeyID }}'
    # Both clusters get the deployment's KeyManager as their effective config.
    clusters = admin_api.get("/v1/clusters", params={"trust_domain_deployment_id": deployment_id})
    assert len(clusters.json()["items"]) == 2
    for cluster in clusters.json()["items"]:
        eff = admin_api.get(
            "/v1/effective-config",
            params={"trust_domain_deployment_id": deployment_id, "cluster_id": cluster["id"]},
        ).json()
        assert eff["sections"]["KeyManager"]["scope"] == "trust-domain-deployment"
    tf.assert_no_changes()

    # Data sources: look the clusters up by name (within the deployment) and by id.
    (work / "lookup.tf").write_text(LOOKUPS)
    tf.apply()
    eu = admin_api.get("/v1/clusters", params={"trust_domain_deployment_id": deployment_id})
    by_name = {c["name"]: c["id"] for c in eu.json()["items"]}
    assert tf.output("eu_by_name") == by_name["eu-west"]
    assert tf.output("us_by_id_name") == "us-east"
    assert tf.output("td_by_id_name") == "shared.example.org"

    # Creating a config resource over a scope that already holds config is refused (that would
    # silently replace someone's config); importing it instead works.
    tf.ok("state", "rm", "spirl_trust_domain_deployment_config.shared_keys")
    flat = tf.fails("apply", "-input=false", "-auto-approve")
    assert "already has configuration" in flat and "terraform import" in flat
    tf.ok(
        "import", "-input=false", "spirl_trust_domain_deployment_config.shared_keys", deployment_id
    )
    tf.assert_no_changes()

    tf.ok("destroy", "-input=false", "-auto-approve")
    assert "shared.example.org" not in trust_domain_names(admin_api)


LOOKUPS = """
data "spirl_cluster" "eu" {
  name                       = "eu-west"
  trust_domain_deployment_id = spirl_trust_domain_deployment.global.id
}
data "spirl_cluster" "us" {
  id = spirl_cluster.us.id
}
data "spirl_trust_domain" "td" {
  id = spirl_trust_domain.example.id
}
output "eu_by_name" {
  value = data.spirl_cluster.eu.id
}
output "us_by_id_name" {
  value = data.spirl_cluster.us.name
}
output "td_by_id_name" {
  value = data.spirl_trust_domain.td.name
}
"""
