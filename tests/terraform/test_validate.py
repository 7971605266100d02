"""Bad YAML fails at `terraform validate`, naming the map entry and the JSON Pointer inside it.

No control plane is involved: validation runs in the provider, before anything is sent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tf_harness import Terraform, copy_example, edit

pytestmark = pytest.mark.terraform

SHARED_REGEX = "keyIdExtractionRegex: '^spire-example-org-(.+)$'"


@pytest.fixture
def shared_keys(tmp_path: Path) -> tuple[Terraform, Path]:
    work = copy_example("shared-keys", tmp_path)
    tf = Terraform.isolated(tmp_path, work)
    tf.init()
    return tf, work / "main.tf"


def test_example_is_valid(shared_keys: tuple[Terraform, Path]) -> None:
    tf, _ = shared_keys
    res = tf.ok("validate")
    assert "The configuration is valid" in res.output


def test_schema_errors_name_entry_and_pointer(shared_keys: tuple[Terraform, Path]) -> None:
    tf, main = shared_keys
    edit(main, 'vaultURL: "https://shared-keys-vault', 'vaultURL: "http://shared-keys-vault')
    edit(main, "jwtKeyTTL: 24h", "jwtKeyTTL: forever")
    res = tf.run("validate")
    assert res.returncode == 1, str(res)
    out = res.output
    # Both problems at once, each with its map entry and pointer.
    assert 'sections["KeyManager"]' in out
    assert "/spec/extensions/azureKeyVault/vaultURL" in out
    assert 'sections["KeyLifecycle"]' in out
    assert "/spec/jwtKeyTTL" in out
    assert "https" in out


def test_doc_regex_defect_is_caught(shared_keys: tuple[Terraform, Path]) -> None:
    """SPIRE's doc regex captures the wrong part for a dotted trust domain."""
    tf, main = shared_keys
    edit(main, SHARED_REGEX, "keyIdExtractionRegex: '^spire-[^-]+-(.+)$'")
    res = tf.run("validate")
    assert res.returncode == 1, str(res)
    assert "/spec/extensions/azureKeyVault/sharedKeys/keyIdExtractionRegex" in res.output


def test_yaml_syntax_error(shared_keys: tuple[Terraform, Path]) -> None:
    tf, main = shared_keys
    edit(main, "keyType: ec-p256", "keyType: [ec-p256")
    res = tf.run("validate")
    assert res.returncode == 1, str(res)
    assert 'sections["KeyManager"]' in res.output


def test_key_must_match_section(shared_keys: tuple[Terraform, Path]) -> None:
    tf, main = shared_keys
    edit(main, "KeyLifecycle = <<-YAML", "Lifecycle = <<-YAML")
    res = tf.run("validate")
    assert res.returncode == 1, str(res)
    assert 'sections["Lifecycle"]' in res.output
    assert "/section" in res.output
