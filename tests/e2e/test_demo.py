"""`make run` is the project's main job: run the demo end to end and check what it claims.

The demo runs with --keep (`make run ARGS=--keep`), so the test also signs in to the web console
it prints, sees the migrated servers on the key timeline, and stops everything with Ctrl-C.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from controlplane.processes import stop_process

from support.api import console_session

pytestmark = pytest.mark.e2e

KEEP_LINE = "Everything keeps running"


def test_make_run_demo_migrates_live_to_key_vault(tmp_path: Path):
    stderr = (tmp_path / "demo.stderr").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlplane.demo", "--keep"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not any("key timeline:" in line for line in lines):
            assert proc.poll() is None, "".join(lines)[-3000:] + stderr_text(tmp_path)
            assert time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.2)
        out = "".join(lines)
        assert "stored version 1 (was 0): sections KeyManager" in out
        assert "complete: 2/2 applied" in out  # config set --wait followed the rollout
        assert "keys in the vault now: 0" in out  # a swap creates no key
        assert "KeyManager /spec/extensions/azureKeyVault/vaultURL: must use https" in out
        assert "'spire-server-td': 'example.org'" in out and "'team': 'identity'" in out
        assert out.count("signature OK") >= 6 and "NOT in" not in out
        assert "same processes throughout" in out and "Done." in out
        assert KEEP_LINE in out

        # The console it printed: sign in with the printed token, see Key Vault keys on the timeline.
        console = re.findall(
            r"web console: (http://\S+/ui/)\s+sign in with the admin token: (\S+)", out
        )
        timeline = re.search(r"key timeline: (http://\S+)", out)
        assert console and timeline
        url, token = console[-1]
        base = url.removesuffix("/ui/")
        with console_session(base, token) as (client, _):
            page = client.get(timeline.group(1))
            kid = re.findall(r'm-akv" data-kid="([^"]+)"', page.text)[0]
            detail = client.get(timeline.group(1).replace("/timeline", f"/keys/{kid}")).text
        assert page.status_code == 200
        bars = re.findall(r'<rect class="key s-(\w+) (m-\w+)', page.text)
        assert ("active", "m-akv") in bars and not any(m == "m-default" for _, m in bars)
        # a click on a bar names the HSM key in the vault
        assert re.search(r'data-field="Key Vault key id">https://127\.0\.0\.1:\d+/keys/', detail)
        assert proc.poll() is None  # still running: --keep

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=60) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "login", timeout=5)  # the control plane is gone
    finally:
        if proc.poll() is None:
            stop_process(proc, 10)
        reader.join(timeout=10)
        stderr.close()


def stderr_text(tmp_path: Path) -> str:
    return (tmp_path / "demo.stderr").read_text()[-3000:]
