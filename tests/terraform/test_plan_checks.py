"""What the provider can know before apply fails `terraform validate` or `terraform plan`, with
the real Terraform CLI, and says where the bad value came from; never a Python exception.

Each command costs seconds (Terraform starts the provider 2-3 times), so each one checks several
problems at once: Terraform reports every diagnostic of a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tf_harness import Terraform

from support.api import make_topology, ok, put_config, shared_keys_key_manager

pytestmark = [pytest.mark.terraform, pytest.mark.xdist_group("tf-plan-checks")]

KL = 'KeyLifecycle = "section: KeyLifecycle\\nschema: v1\\nspec: {jwtKeyTTL: 6h}\\n"'
REGEX = "/spec/extensions/azureKeyVault/sharedKeys/keyIdExtractionRegex"


def heredoc(text: str) -> str:
    """`text` as an HCL heredoc (`${` and `%{` escaped)."""
    escaped = text.replace("${", "$${").replace("%{", "%%{")
    return f"<<-YAML\n{escaped}YAML"


@pytest.fixture
def tf(tmp_path: Path, shared_control_plane: Any) -> Terraform:
    work = tmp_path / "work"
    work.mkdir()
    tf = Terraform.isolated(tmp_path, work, shared_control_plane.env())
    tf.write('resource "spirl_trust_domain" "x" {\n  name = "x.test"\n}\n')
    tf.init()
    return tf


def test_validate_reports_every_offline_problem(tf: Terraform) -> None:
    tf.write(
        f"""
resource "spirl_trust_domain" "bad" {{
  name = "Example.ORG"
}}
resource "spirl_cluster" "bad" {{
  name                       = "-east"
  trust_domain_deployment_id = "td-not-a-deployment"
}}
resource "spirl_cluster_config" "empty_entry" {{
  cluster_id = "c-0a1b2c3d4e5f"
  sections   = {{ KeyManager = "", {KL} }}
}}
resource "spirl_trust_domain_config" "null_entry" {{
  trust_domain_id = "td-0a1b2c3d4e5f"
  sections        = {{ KeyLifecycle = null }}
}}
resource "spirl_config_section" "bad_scope" {{
  scope    = "clusters"
  scope_id = "c-0a1b2c3d4e5f"
  section  = "KeyLifecycle"
  yaml     = "section: KeyLifecycle\\nschema: v1\\nspec: {{jwtKeyTTL: 6h}}\\n"
}}
resource "spirl_join_token" "too_long" {{
  trust_domain_deployment_id = "tdd-0a1b2c3d4e5f"
  ttl                        = "8d"
}}
"""
    )
    out = tf.fails("validate")
    assert "Invalid name 'Example.ORG'" in out and "SPIFFE trust domain" in out
    assert "Invalid name '-east'" in out and "Invalid trust_domain_deployment_id" in out
    assert 'sections["KeyManager"], JSON Pointer (document): is empty' in out
    assert 'sections["KeyLifecycle"], JSON Pointer (document): is null' in out
    assert "Invalid scope" in out and "Invalid ttl" in out and "at most 7d" in out
    assert "Traceback" not in out and "Error:" in out


def test_plan_blames_the_environment_for_its_values(tf: Terraform) -> None:
    tf.env.update(SPIRL_ENDPOINT="ftp://127.0.0.1:8080", SPIRL_TOKEN="")
    out = tf.fails("plan", "-input=false")
    assert "Invalid $SPIRL_ENDPOINT" in out
    assert "The provider block sets no endpoint, so the environment variable is used" in out
    assert "Empty $SPIRL_TOKEN" in out and "set but empty" in out
    # The same values written in the block are the block's fault, found by `terraform validate`.
    tf.write(
        'provider "spirl" {\n  endpoint = "ftp://127.0.0.1:8080"\n  token    = ""\n}\n'
        'resource "spirl_trust_domain" "x" {\n  name = "x.test"\n}\n'
    )
    out = tf.fails("validate")
    assert "`endpoint` in the provider block must be an http:// or https:// URL" in out
    assert "Empty token" in out and "`token` in the provider block is empty" in out


def test_plan_checks_the_scopes_and_their_trust_domains(
    tf: Terraform, shared_control_plane: Any
) -> None:
    with shared_control_plane.client() as admin:
        dotted = make_topology(admin, "acme.com")["tdd"]
        one_label = make_topology(admin, "acme")["tdd"]
        # Someone wrote acme.com's deployment config outside Terraform.
        kl = "section: KeyLifecycle\nschema: v1\nspec: {jwtKeyTTL: 6h}\n"
        ok(put_config(admin, "trust-domain-deployment", dotted, kl))
    example_regex = heredoc(shared_keys_key_manager("^spire-example-org-(.+)$"))
    spire_regex = heredoc(shared_keys_key_manager("^spire-[^-]+-(.+)$"))
    tf.write(
        f"""
variable "key_manager" {{
  type    = string
  default = null
}}
resource "spirl_trust_domain_deployment_config" "acme_com" {{
  trust_domain_deployment_id = "{dotted}"
  sections = {{
    KeyManager = {example_regex}
  }}
}}
resource "spirl_trust_domain_deployment_config" "acme" {{
  trust_domain_deployment_id = "{one_label}"
  sections = {{
    KeyManager = {spire_regex}
  }}
}}
resource "spirl_config_section" "taken" {{
  scope    = "trust-domain-deployment"
  scope_id = "{dotted}"
  section  = "KeyLifecycle"
  yaml     = "section: KeyLifecycle\\nschema: v1\\nspec: {{jwtKeyTTL: 6h}}\\n"
}}
resource "spirl_cluster_config" "null_from_variable" {{
  cluster_id = "c-0a1b2c3d4e5f"
  sections   = {{ KeyManager = var.key_manager }}
}}
resource "spirl_cluster_config" "no_such_cluster" {{
  cluster_id = "c-0a1b2c3d4e5f"
  sections   = {{}}
}}
"""
    )
    out = tf.fails("plan", "-input=false")
    # The scope holds config: plan-time error with the command to run instead.
    assert f"{dotted} already has configuration" in out
    assert f"terraform import spirl_trust_domain_deployment_config.<name> {dotted}" in out
    # The same for one section.
    assert f"{dotted} already has a KeyLifecycle section" in out
    taken = f"trust-domain-deployment/{dotted}/KeyLifecycle"
    assert f"terraform import spirl_config_section.<name> {taken}" in out
    # example.org's regex next to acme.com: refused with the real trust domain's key name.
    assert f'Invalid sections["KeyManager"] at {REGEX}' in out
    assert "'spire-acme-com-jwt-signer-a'" in out and "trust domain 'acme.com'" in out
    # SPIRE's doc regex on a one-label trust domain: accepted (no error names that resource).
    assert "spirl_trust_domain_deployment_config.acme," not in out
    # A variable defaulting to null: a clear error, not a crash at apply.
    assert 'sections["KeyManager"], JSON Pointer (document): is null' in out
    assert "No cluster c-0a1b2c3d4e5f" in out
    assert "Traceback" not in out

    # With the scope's config imported by name (an import block), the regex fixed and the
    # broken resources gone, apply works; a trust domain made in the same run is unknown at plan
    # and checked at apply.
    tf.write(
        f"""
import {{
  to = spirl_trust_domain_deployment_config.acme_com
  id = "acme.com/prod"
}}
resource "spirl_trust_domain_deployment_config" "acme_com" {{
  trust_domain_deployment_id = "{dotted}"
  sections = {{
    KeyManager = {heredoc(shared_keys_key_manager("^spire-acme-com-(.+)$"))}
  }}
}}
resource "spirl_trust_domain_deployment_config" "acme" {{
  trust_domain_deployment_id = "{one_label}"
  sections = {{
    KeyManager = {spire_regex}
  }}
}}
resource "spirl_trust_domain" "new" {{
  name = "new.acme.com"
}}
resource "spirl_trust_domain_deployment" "new" {{
  name            = "prod"
  trust_domain_id = spirl_trust_domain.new.id
}}
resource "spirl_trust_domain_deployment_config" "new" {{
  trust_domain_deployment_id = spirl_trust_domain_deployment.new.id
  sections = {{
    KeyManager = {example_regex}
  }}
}}
"""
    )
    out = tf.fails("apply", "-input=false", "-auto-approve")
    assert f'Invalid sections["KeyManager"] at {REGEX}' in out
    assert "'spire-new-acme-com-jwt-signer-a'" in out
    assert "spirl_trust_domain_deployment_config.new," in out  # the only resource that failed
    with shared_control_plane.client() as admin:
        stored = ok(admin.get(f"/v1/config/trust-domain-deployment/{dotted}"))
        assert set(stored["sections"]) == {"KeyManager"}  # imported, then pruned and updated
        acme = ok(admin.get(f"/v1/config/trust-domain-deployment/{one_label}"))
        assert set(acme["sections"]) == {"KeyManager"}
        deployments = ok(admin.get("/v1/trust-domain-deployments"))["items"]
        new_id = next(d["id"] for d in deployments if d["trust_domain_name"] == "new.acme.com")
        assert ok(admin.get(f"/v1/config/trust-domain-deployment/{new_id}"))["version"] == 0

    # spirlctl config validate asks the control plane, which knows the trust domain too.
    args = ("config", "validate", "trust-domain-deployment", "--id", new_id, "-")
    bad = shared_control_plane.spirlctl(
        *args, input_text=shared_keys_key_manager("^spire-example-org-(.+)$"), check=False
    )
    assert bad.returncode == 1 and "keyIdExtractionRegex" in bad.stderr
    good = shared_control_plane.spirlctl(
        *args, input_text=shared_keys_key_manager("^spire-new-acme-com-(.+)$")
    )
    assert "valid: KeyManager" in good.stdout
