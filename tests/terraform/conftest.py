"""Fixtures for the Terraform provider tests: isolated Terraform runs and a live control plane."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# pytest runs with --import-mode=importlib (test dirs are not on sys.path); the test modules and
# benchmarks/terraform_plan.py import the harness next to this file.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(scope="module")
def shared_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One control plane for a whole test module: its tests keep apart by naming their own
    trust domains (each test module runs in one xdist group)."""
    from support.controlplane import start_control_plane

    cp = start_control_plane(tmp_path_factory.mktemp("controlplane"))
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[Any]:
    """A real control plane process on 127.0.0.1 (tests/support/controlplane.py)."""
    from support.controlplane import start_control_plane

    cp = start_control_plane(tmp_path / "controlplane")
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def admin_api(shared_control_plane: Any) -> Iterator[Any]:
    """httpx client with the admin token, for checking and for changing things behind Terraform."""
    with shared_control_plane.client() as client:
        yield client
