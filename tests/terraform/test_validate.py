"""Bad YAML fails at `terraform validate`, naming the map entry and the JSON Pointer inside it.

No control plane is involved: validation runs in the provider, before anything is sent. The
checks that depend on the scope's trust domain wait for `terraform plan` (test_plan_checks.py),
as do values Terraform does not know at validate (the shared-keys example's KeyManager, built
from a variable). One `terraform init`; one `terraform validate` reports every problem at once,
bad `timeouts` durations too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tf_harness import Terraform, copy_example

pytestmark = [pytest.mark.terraform, pytest.mark.xdist_group("tf-validate")]

BAD = """
resource "spirl_cluster_config" "schema" {
  cluster_id = "c-0a1b2c3d4e5f"
  sections = {
    KeyManager   = <<-YAML
      section: KeyManager
      schema: v1
      spec:
        extensions:
          azureKeyVault:
            vaultURL: "http://my-vault.vault.azure.net/"
    YAML
    KeyLifecycle = <<-YAML
      section: KeyLifecycle
      schema: v1
      spec:
        jwtKeyTTL: forever
    YAML
  }
}
resource "spirl_cluster_config" "syntax" {
  cluster_id = "c-0a1b2c3d4e5f"
  sections = {
    KeyManager = "section: KeyManager\\nschema: v1\\nspec: {extensions: [unclosed\\n"
  }
}
resource "spirl_trust_domain_config" "key" {
  trust_domain_id = "td-0a1b2c3d4e5f"
  sections = {
    Lifecycle = "section: KeyLifecycle\\nschema: v1\\nspec: {jwtKeyTTL: 6h}\\n"
  }
  wait_for_rollout = true
  timeouts         = { update = "10 minutes" }
}
resource "spirl_config_section" "wait" {
  scope            = "cluster"
  scope_id         = "c-0a1b2c3d4e5f"
  section          = "KeyLifecycle"
  yaml             = "section: KeyLifecycle\\nschema: v1\\nspec: {jwtKeyTTL: 6h}\\n"
  wait_for_rollout = true
  timeouts         = { create = "0s", update = "1h30m" }
}
"""


def test_validate(tmp_path: Path) -> None:
    work = copy_example("shared-keys", tmp_path)
    tf = Terraform.isolated(tmp_path, work)
    tf.init()
    assert "The configuration is valid" in tf.ok("validate").output

    (work / "main.tf").write_text(BAD)
    out = tf.fails("validate")
    # Every problem at once, each with its resource, map entry and pointer.
    assert 'sections["KeyManager"], JSON Pointer /spec/extensions/azureKeyVault/vaultURL' in out
    assert "must use https" in out
    assert 'sections["KeyLifecycle"], JSON Pointer /spec/jwtKeyTTL' in out
    assert "with spirl_cluster_config.syntax" in out  # the YAML syntax error, at its entry
    assert 'sections["Lifecycle"], JSON Pointer /section' in out
    # Durations of `timeouts`, each at its attribute.
    errors = out.split("Error: ")
    (key,) = [e for e in errors if "Invalid timeout with spirl_trust_domain_config.key" in e]
    (wait,) = [e for e in errors if "Invalid timeout with spirl_config_section.wait" in e]
    assert 'in resource "spirl_trust_domain_config" "key": 33: timeouts = { update' in key
    assert "`timeouts.update` must be a duration such as" in key and "'10 minutes'" in key
    assert "41: timeouts = { create" in wait
    assert "`timeouts.create` must be longer than zero" in wait and "timeouts.update" not in wait
    assert "Traceback" not in out
