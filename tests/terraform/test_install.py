"""install_provider: the wrapper Terraform finds offline, with no CLI config file, whose bytes
(and so the lock file's hash) do not depend on the Python environment it came from; and the
registry docs agree with the schema Terraform gets from the provider."""

from __future__ import annotations

import json
import os
import platform
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tf_harness import Terraform

from controlplane.terraform.docs import DOCS
from controlplane.terraform.install import (
    COOKIE_ENV,
    EXECUTABLE,
    PYTHON_ENV,
    PYTHON_RECORD,
    install_provider,
    platform_dir,
)

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
    assert str(tmp_path) not in text and sys.prefix not in text  # no absolute path
    record = path.parent.parent / PYTHON_RECORD
    assert record.read_text() == sys.executable + "\n"
    # Installing again, from another environment, changes the record and not the wrapper.
    assert install_provider(tmp_path / "plugins", python="/other/venv/bin/python") == path
    assert path.read_text() == text
    assert record.read_text() == "/other/venv/bin/python\n"
    assert sorted(p.name for p in path.parent.iterdir()) == [EXECUTABLE]
    assert sorted(p.name for p in record.parent.iterdir()) == sorted(
        [PYTHON_RECORD, platform_dir()]
    )


def test_default_root_is_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    path = install_provider()
    assert str(path).startswith(str(tmp_path / ".terraform.d" / "plugins"))


def test_wrapper_that_cannot_start_waits_for_terraform_to_read_why(tmp_path: Path) -> None:
    """Terraform 1.11's go-plugin (1.6.0) closes a plugin's stdout when the process exits, so an
    unread line is lost ("Failed to read any lines"; seen once in CI). Started by Terraform (its
    magic cookie set), the wrapper prints why and waits to be stopped; by hand, it exits 1."""
    path = install_provider(tmp_path / "plugins", python=str(tmp_path / "gone" / "python"))
    env = {k: v for k, v in os.environ.items() if k not in (COOKIE_ENV, PYTHON_ENV)}

    by_hand = subprocess.run([str(path)], capture_output=True, text=True, env=env, timeout=5)
    assert by_hand.returncode == 1
    assert str(tmp_path / "gone" / "python") in by_hand.stdout

    proc = subprocess.Popen(
        [str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**env, COOKIE_ENV: "set-by-terraform"},
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "spirlctl terraform install-provider" in line
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)  # still there: Terraform reads the line, then stops it
    finally:
        proc.kill()
        proc.wait(timeout=5)


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


def test_terraform_init_offline_schema_docs_and_examples(tmp_path: Path) -> None:
    """`spirlctl terraform install-provider`, then `terraform init` offline; the docs' examples
    are a valid configuration, and the docs list exactly the attributes Terraform gets."""
    work = tmp_path / "work"
    work.mkdir()
    examples = sorted((DOCS / "examples").rglob("*.tf"))
    for example in examples:  # they refer to each other: one configuration
        (work / f"{example.parent.name}_{example.name}").write_text(example.read_text())
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
    assert "The configuration is valid" in tf.ok("validate").output
    schema = json.loads(tf.ok("providers", "schema", "-json").stdout)
    served = schema["provider_schemas"]["registry.terraform.io/spirl/spirl"]
    pages = {DOCS / "index.md": served["provider"]}
    for kind, folder in (
        ("resource_schemas", "resources"),
        ("data_source_schemas", "data-sources"),
    ):
        for name, spec in served[kind].items():
            pages[DOCS / folder / f"{name.removeprefix('spirl_')}.md"] = spec
    assert len(pages) == 1 + 8 + 5
    for page, spec in pages.items():
        assert documented(page.read_text()) == attributes(spec["block"]), page
    assert served["provider"]["block"]["attributes"]["token"]["sensitive"] is True


def attributes(block: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(group, name, description) of every attribute Terraform got, nested object ones and
    nested attributes' too."""
    out = set()
    for name, attr in block["attributes"].items():
        group = (
            "Required"
            if attr.get("required")
            else "Optional"
            if attr.get("optional")
            else "Read-Only"
        )
        out.add((group, name, attr["description"]))
        if "nested_type" in attr:  # a nested attribute (`timeouts`)
            out |= {(f"Nested {name}", field, "") for field in attr["nested_type"]["attributes"]}
            continue
        kind = attr["type"]
        while isinstance(kind, list) and kind[0] in ("list", "map", "set"):
            kind = kind[1]
        if isinstance(kind, list) and kind[0] == "object":
            out |= {(f"Nested {name}", field, "") for field in kind[1]}
    return out


def documented(page: str) -> set[tuple[str, str, str]]:
    """The same, read back from a docs page: `- `name` (Type) description` under its heading."""
    out, group = set(), ""
    for line in page.splitlines():
        if line.startswith("### Nested Schema for `"):
            group = "Nested " + line.split("`")[1]
        elif line.startswith("### "):
            group = line[4:]
        elif line.startswith("- `") and group:
            name = line.split("`")[1]
            description = line.split(") ", 1)[1].split(" (see [below", 1)[0]
            out.add((group, name, "" if group.startswith("Nested") else description))
    return out


def test_lock_file_is_stable_across_reinstalls(tmp_path: Path) -> None:
    """`terraform providers lock -fs-mirror` on the installed copy; re-installing from another
    environment keeps the lock valid; a vanished environment is named, and a re-install heals it."""
    plugins = tmp_path / "home" / ".terraform.d" / "plugins"
    work = tmp_path / "work"
    work.mkdir()
    tf = Terraform.isolated(tmp_path, work)  # installs from this environment
    tf.write('resource "spirl_trust_domain" "td" {\n  name = "example.org"\n}\n')
    lock = work / ".terraform.lock.hcl"
    mirror = ("providers", "lock", f"-fs-mirror={plugins}", f"-platform={platform_dir()}")
    tf.ok(*mirror)
    first = lock.read_text()
    assert "h1:" in first

    # Another virtualenv (here: another path to a Python with spirl), the same version.
    other = tmp_path / "other-venv" / "bin" / "python"
    other.parent.mkdir(parents=True)
    other.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    other.chmod(0o755)
    install_provider(plugins, python=str(other))
    tf.ok(*mirror)
    assert lock.read_text() == first
    tf.init()  # checks the installed package against the lock
    assert lock.read_text() == first
    assert "The configuration is valid" in tf.ok("validate").output  # runs `other`

    # That environment is removed: the provider says what to do instead of a stack trace.
    other.unlink()
    out = tf.fails("validate")
    assert str(other) in out and "spirlctl terraform install-provider" in out, out
