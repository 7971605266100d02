"""Run the real Terraform CLI against the installed provider, isolated in a tmp dir.

Isolation: HOME is a tmp dir (the provider is installed under its ~/.terraform.d/plugins, the
tf runner caches its TLS cert under its ~/.cache), TF_CLI_CONFIG_FILE and TF_PLUGIN_CACHE_DIR are
removed (this machine points TF_CLI_CONFIG_FILE at a missing file), no checkpoint calls.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.terraform.install import install_provider

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "terraform-examples"
DROP_ENV = (
    "TF_CLI_CONFIG_FILE",
    "TF_PLUGIN_CACHE_DIR",
    "TF_LOG",
    "TF_LOG_PATH",
    "TF_DATA_DIR",
    "SPIRL_ENDPOINT",
    "SPIRL_TOKEN",
    "SPIRL_PROVIDER_PYTHON",
)
REQUIRED_PROVIDERS = """terraform {
  required_providers {
    spirl = { source = "spirl/spirl", version = "0.1.0" }
  }
}
"""


def terraform_binary() -> str:
    """The terraform CLI; a missing CLI is a failure, never a skip."""
    found = shutil.which("terraform")
    if found is None:
        raise AssertionError(
            "the terraform CLI is not on PATH; the terraform tests need it (install Terraform >= 1.5)"
        )
    return found


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:
        return f"terraform {' '.join(self.args)} -> {self.returncode}\n{self.output}"


@dataclass
class Terraform:
    """A working directory plus the environment Terraform runs with."""

    workdir: Path
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def isolated(
        cls,
        tmp_path: Path,
        workdir: Path,
        extra_env: dict[str, str] | None = None,
        *,
        install: bool = True,
    ) -> Terraform:
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        if install:
            install_provider(home / ".terraform.d" / "plugins")
        env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
        env.update(
            HOME=str(home),
            TF_IN_AUTOMATION="1",
            CHECKPOINT_DISABLE="1",
            TF_INPUT="0",
        )
        env.update(extra_env or {})
        return cls(workdir=workdir, home=home, env=env)

    def run(self, *args: str, timeout: float = 120) -> Result:
        # Options go right after the (sub)command words: `state rm -no-color ADDR`.
        words = 2 if args[0] in ("providers", "state", "workspace") else 1
        cmd = [terraform_binary(), *args[:words], "-no-color", *args[words:]]
        proc = subprocess.run(
            cmd, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        return Result(list(args), proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str) -> Result:
        res = self.run(*args)
        assert res.returncode == 0, str(res)
        return res

    def init(self) -> Result:
        return self.ok("init", "-input=false")

    def plan_exit(self, *extra: str) -> Result:
        """`plan -detailed-exitcode`: 0 = no changes, 2 = changes, 1 = error."""
        return self.run("plan", "-input=false", "-detailed-exitcode", *extra)

    def assert_no_changes(self) -> Result:
        res = self.plan_exit()
        assert res.returncode == 0, f"expected no changes\n{res}"
        return res

    def apply(self, *extra: str) -> Result:
        return self.ok("apply", "-input=false", "-auto-approve", *extra)

    def output(self, name: str) -> str:
        return self.ok("output", "-raw", name).stdout

    def write(self, text: str, name: str = "main.tf") -> None:
        """Replace a configuration file (the spirl provider requirement is put first)."""
        (self.workdir / name).write_text(REQUIRED_PROVIDERS + text)

    def state(self) -> str:
        path = self.workdir / "terraform.tfstate"
        return path.read_text() if path.exists() else ""

    def fails(self, *args: str) -> str:
        """Run a command that must fail; its output with lines joined (Terraform wraps them)."""
        res = self.run(*args)
        assert res.returncode == 1, str(res)
        return " ".join(res.output.split())


def copy_example(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copytree(
        EXAMPLES / name, target, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*")
    )
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))
