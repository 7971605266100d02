"""`make run` is the project's main job: run the demo end to end and check what it claims."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_make_run_demo_migrates_live_to_key_vault(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "controlplane.demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "stored version 1 (was 0): sections KeyManager" in out
    assert "keys in the vault now: 0" in out  # a swap creates no key
    assert "KeyManager /spec/extensions/azureKeyVault/vaultURL: must use https" in out
    assert "'spire-server-td': 'example.org'" in out and "'team': 'identity'" in out
    assert out.count("signature OK") >= 6 and "NOT in" not in out
    assert "same processes throughout" in out and "Done." in out
