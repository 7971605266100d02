"""Terraform drops an object from its state only when the control plane itself says `not_found`.

The issue's bug: with SPIRL_ENDPOINT on a wrong path prefix, every 404 read as "deleted" and one
apply emptied the state. Here, with the real Terraform CLI: a wrong path prefix (the control
plane's own plain 404), a wrong port where another JSON service answers `not_found`, and a proxy's
HTML page all fail the run and leave the state byte for byte; a real deletion is still seen. The
provider's retry and timeout settings run through a proxy in front of the control plane.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from http_fakes import fake_server
from tf_harness import Terraform

pytestmark = [pytest.mark.terraform, pytest.mark.xdist_group("tf-endpoints")]

CONFIG = """
variable "td" { type = string }
variable "timeout" {
  type    = number
  default = 30
}

provider "spirl" {
  request_timeout = var.timeout
  max_retries     = 2
}

resource "spirl_trust_domain" "td" {
  name = var.td
}
resource "spirl_trust_domain_deployment" "prod" {
  name            = "prod"
  trust_domain_id = spirl_trust_domain.td.id
}
resource "spirl_cluster" "east" {
  name                       = "east"
  trust_domain_deployment_id = spirl_trust_domain_deployment.prod.id
}
resource "spirl_cluster_config" "east" {
  cluster_id = spirl_cluster.east.id
  sections = {
    KeyLifecycle = "section: KeyLifecycle\\nschema: v1\\nspec: {jwtKeyTTL: 6h}\\n"
  }
}
resource "spirl_config_section" "prod_lifecycle" {
  scope    = "trust-domain-deployment"
  scope_id = spirl_trust_domain_deployment.prod.id
  section  = "KeyLifecycle"
  yaml     = "section: KeyLifecycle\\nschema: v1\\nspec: {jwtKeyTTL: 12h}\\n"
}
"""


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory, shared_control_plane: Any) -> Terraform:
    """The configuration above, applied once for the module (each command costs seconds)."""
    tmp_path = tmp_path_factory.mktemp("endpoints")
    work = tmp_path / "work"
    work.mkdir()
    tf = Terraform.isolated(tmp_path, work, {**shared_control_plane.env(), "TF_VAR_td": "ep.test"})
    tf.write(CONFIG)
    tf.init()
    tf.apply()
    return tf


def resources(state: str) -> dict[str, dict[str, Any]]:
    return {
        f"{r['type']}.{r['name']}": r["instances"][0]["attributes"]
        for r in json.loads(state)["resources"]
        if r["mode"] == "managed"
    }


def test_retries_on_busy_and_request_timeout(applied: Terraform, shared_control_plane: Any) -> None:
    tf, before = applied, applied.state()
    with fake_server("unavailable", upstream=shared_control_plane.url) as proxy:
        tf.env["SPIRL_ENDPOINT"] = proxy.url
        # Two 503s are retried (max_retries = 2): the refresh goes through.
        proxy.failures = 2
        tf.assert_no_changes()
        assert proxy.failed == 2
        # Three 429s in a row are one too many: the run fails, the state stays.
        proxy.status, proxy.failures, proxy.failed = 429, 3, 0
        out = tf.fails("plan", "-input=false", "-refresh-only")
        assert "HTTP 429" in out
        assert proxy.failed == 3
    with fake_server("hang") as silent:
        tf.env.update(SPIRL_ENDPOINT=silent.url, TF_VAR_timeout="1")
        out = tf.fails("plan", "-input=false")
        assert "did not answer" in out and "within 1s" in out
    del tf.env["TF_VAR_timeout"]
    assert tf.state() == before
    tf.env["SPIRL_ENDPOINT"] = shared_control_plane.url


def test_a_wrong_endpoint_never_empties_the_state(
    applied: Terraform, shared_control_plane: Any
) -> None:
    tf, cp = applied, shared_control_plane
    before = tf.state()
    assert len(resources(before)) == 5
    with fake_server("json404") as other_service, fake_server("html404") as proxy:
        wrong = [
            # (endpoint, command, why): the refresh-only apply is what wrote the empty state
            (cp.url + "/api", "-refresh-only", "without the control plane's not_found error"),
            (other_service.url, "-refresh-only", "not a spirl control plane"),
            (proxy.url, "-auto-approve", "not a spirl control plane"),
        ]
        for endpoint, mode, why in wrong:
            tf.env["SPIRL_ENDPOINT"] = endpoint
            out = tf.fails("apply", "-input=false", "-auto-approve", mode)
            assert why in out, endpoint
            assert endpoint in out  # says where it asked
            assert tf.state() == before, endpoint
        assert other_service.requests and proxy.requests
    tf.env["SPIRL_ENDPOINT"] = cp.url

    # The control plane itself says the section is gone: then the plan puts it back, and only it.
    tdd = resources(before)["spirl_trust_domain_deployment.prod"]["id"]
    with cp.client() as admin:
        gone = admin.delete(f"/v1/config/trust-domain-deployment/{tdd}/sections/KeyLifecycle")
        assert gone.status_code == 200, gone.text
    res = tf.plan_exit()
    assert res.returncode == 2, str(res)
    assert "spirl_config_section.prod_lifecycle will be created" in res.output
    assert "Plan: 1 to add, 0 to change, 0 to destroy" in res.output
