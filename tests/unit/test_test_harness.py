"""The test harness itself: what the suite relies on from pytest and pytest-xdist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

GROUPED = """\
import json, os, pytest

pytestmark = pytest.mark.xdist_group("one")


@pytest.mark.parametrize("i", range(6))
def test_worker(i):
    with open(os.environ["OUT"], "a") as out:
        out.write(json.dumps(os.environ.get("PYTEST_XDIST_WORKER")) + "\\n")
"""


def test_xdist_group_keeps_a_group_on_one_worker(tmp_path: Path) -> None:
    # Module fixtures that start servers or build the wheel (tests/e2e/test_wheel_install.py)
    # rely on `make test`'s --dist loadgroup; pytest 9.2 with pytest-xdist 3.8 ignored it.
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    out = tmp_path / "workers.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup"]
        + ["-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True,
        text=True,
        env={"OUT": str(out), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    workers = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(workers) == 6 and len(set(workers)) == 1, workers
