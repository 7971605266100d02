"""install_provider: the wrapper Terraform finds offline, with no CLI config file."""

from __future__ import annotations

import os
import platform
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from tf_harness import Terraform

from controlplane.terraform.install import EXECUTABLE, install_provider, platform_dir

pytestmark = pytest.mark.terraform


def test_platform_dir_matches_machine() -> None:
    system, arch = platform_dir().split("_", 1)
    assert system == platform.system().lower()
    assert arch in {"amd64", "arm64", "386", platform.machine().lower()}


def test_install_writes_executable_wrapper(tmp_path: Path) -> None:
    path = install_provider(tmp_path / "plugins")
    assert path == (
        tmp_path / "plugins/registry.terraform.io/spirl/spirl/0.1.0" / platform_dir() / EXECUTABLE
    )
    assert EXECUTABLE == "terraform-provider-spirl_v0.1.0"
    assert path.stat().st_mode & stat.S_IXUSR
    text = path.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "-m controlplane.terraform.main" in text
    # Installing again replaces the file in place (idempotent, no leftovers).
    assert install_provider(tmp_path / "plugins") == path
    assert sorted(p.name for p in path.parent.iterdir()) == [EXECUTABLE]


def test_default_root_is_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    path = install_provider()
    assert str(path).startswith(str(tmp_path / ".terraform.d" / "plugins"))


def test_wrapper_speaks_the_plugin_handshake(tmp_path: Path) -> None:
    """Started by hand, the provider prints go-plugin's handshake line on stdout."""
    path = install_provider(tmp_path / "plugins")
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    parts = line.strip().split("|")
    assert parts[:3] == ["1", "6", "unix"], line
    assert parts[4] == "grpc"


def test_terraform_init_offline_and_schema(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "main.tf").write_text(
        'terraform {\n  required_providers {\n    spirl = { source = "spirl/spirl", version = "0.1.0" }\n  }\n}\n'
        'resource "spirl_trust_domain" "td" { name = "example.org" }\n'
    )
    # The user's path: `spirlctl terraform install-provider` (default folder under HOME).
    home = tmp_path / "home"
    spirlctl = Path(sys.executable).with_name("spirlctl")
    done = subprocess.run(
        [str(spirlctl), "terraform", "install-provider"],
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert str(home / ".terraform.d/plugins/registry.terraform.io/spirl/spirl") in done.stdout
    tf = Terraform.isolated(tmp_path, work, install=False)
    res = tf.init()
    assert "Installing spirl/spirl v0.1.0" in res.output
    assert (work / ".terraform.lock.hcl").exists()
    schema = tf.ok("providers", "schema", "-json").stdout
    for name in (
        "spirl_trust_domain",
        "spirl_trust_domain_deployment",
        "spirl_cluster",
        "spirl_cluster_config",
        "spirl_trust_domain_deployment_config",
    ):
        assert f'"{name}"' in schema
    assert '"sensitive":true' in schema  # the token
