"""The package as a user installs it: build the sdist and wheel, install the wheel (with the locked
dependencies) into a fresh virtualenv outside the checkout, and run every console script from it.

This is what proves `schemas/`, `migrations/` and the web console's templates and static files
ship in the wheel: nothing here can see the checkout (the working directory is a temporary
folder and PYTHONPATH is cleared).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
from terraform.tf_harness import terraform_binary

from controlplane.processes import start_announced, stop_process

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("wheel")]

REPO = Path(__file__).resolve().parents[2]

KEY_MANAGER = """\
section: KeyManager
schema: v1
spec:
  extensions:
    azureKeyVault:
      vaultURL: "https://my-key-vault.vault.azure.net/"
"""
UNKNOWN_FIELD = KEY_MANAGER + "      colour: blue\n"

TERRAFORM = """\
terraform {
  required_providers {
    spirl = { source = "spirl/spirl" }
  }
}
resource "spirl_trust_domain" "td" {
  name = "wheel.example.org"
}
"""


def uv_binary() -> str:
    """The uv that `make` installed (SPIRL_UV), else the checkout's .tools, else PATH; never a skip."""
    for candidate in (os.environ.get("SPIRL_UV"), str(REPO / ".tools" / "bin" / "uv")):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("uv")
    if found is None:
        raise AssertionError("uv is not installed: run the suite with `make test`")
    return found


def run(cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    result = subprocess.run(
        cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{cmd} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    """(venv bin folder, environment, a working folder outside the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    uv = uv_binary()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.pop("UV_PROJECT_ENVIRONMENT", None)

    build_log = run(
        [uv, "build", "--quiet", "--out-dir", str(tmp / "dist"), str(REPO)], env=env, cwd=tmp
    )
    assert "deprecat" not in build_log.lower(), build_log
    wheels = list((tmp / "dist").glob("*.whl"))
    assert len(wheels) == 1 and list((tmp / "dist").glob("*.tar.gz"))
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "controlplane/schemas/KeyManager.v1.json" in names
    assert "controlplane/migrations/env.py" in names
    assert any(n.startswith("controlplane/migrations/versions/0001") for n in names)
    assert {
        "controlplane/console/templates/base.html",
        "controlplane/console/static/console.js",
        "controlplane/console/static/console.css",
    } <= set(names)

    requirements = tmp / "requirements.txt"
    requirements.write_text(
        run(
            [
                uv,
                "export",
                "--frozen",
                "--no-emit-project",
                "--quiet",
                "--format",
                "requirements-txt",
            ],
            env=env,
            cwd=REPO,
        )
    )
    venv = tmp / "venv"
    run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], env=env, cwd=tmp)
    python = str(venv / "bin" / "python")
    pip = [uv, "pip", "install", "--quiet", "--python", python]
    run([*pip, "--require-hashes", "-r", str(requirements)], env=env, cwd=tmp)
    run([*pip, "--no-deps", str(wheels[0])], env=env, cwd=tmp)

    work = tmp / "work"
    work.mkdir()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    return venv / "bin", env, work


def test_the_wheel_is_what_runs(installed: tuple[Path, dict[str, str], Path]) -> None:
    bin_dir, env, work = installed
    where = run(
        [str(bin_dir / "python"), "-c", "import controlplane; print(controlplane.__file__)"],
        env=env,
        cwd=work,
    ).strip()
    assert where.startswith(str(bin_dir.parent)), where


def test_console_scripts_from_the_wheel(
    installed: tuple[Path, dict[str, str], Path], tmp_path: Path
) -> None:
    bin_dir, env, work = installed
    data = tmp_path / "data"
    db = ["--data-dir", str(data)]
    # migrations/ found: the schema is created, then serve starts without --migrate.
    run([str(bin_dir / "spirl-controlplane"), "migrate", *db], env=env, cwd=work)
    token = run(
        [str(bin_dir / "spirl-controlplane"), "token", "create", "--role", "admin", *db],
        env=env,
        cwd=work,
    ).strip()
    serve, announced = start_announced(
        [str(bin_dir / "spirl-controlplane"), "serve", "--listen", "127.0.0.1:0", *db],
        log_path=tmp_path / "serve.log",
        env=env,
        cwd=work,
    )
    emulator = None
    try:
        url = announced["url"]
        # The web console's templates and static files come from the installed wheel.
        assert announced["console_url"] == f"{url}/ui/"
        login = httpx.get(f"{url}/ui/login")
        assert login.status_code == 200 and 'id="login-form"' in login.text
        for asset in ("console.js", "console.css"):
            assert httpx.get(f"{url}/ui/static/{asset}").status_code == 200
        cli_env = {**env, "SPIRL_ENDPOINT": url, "SPIRL_TOKEN": token}
        spirlctl = str(bin_dir / "spirlctl")
        td = json.loads(
            run(
                [spirlctl, "trust-domain", "create", "example.org", "-o", "json"],
                env=cli_env,
                cwd=work,
            )
        )
        tdd = json.loads(
            run(
                [spirlctl, "trust-domain", "deployment", "create", "prod"]
                + ["--trust-domain", td["id"], "-o", "json"],
                env=cli_env,
                cwd=work,
            )
        )
        # schemas/ found: a good document validates, an unknown field is refused with its pointer.
        good, bad = work / "good.yaml", work / "bad.yaml"
        good.write_text(KEY_MANAGER)
        bad.write_text(UNKNOWN_FIELD)
        validate = [spirlctl, "config", "validate", "trust-domain-deployment", "--id", tdd["id"]]
        run([*validate, str(good)], env=cli_env, cwd=work)
        refused = subprocess.run(
            [*validate, str(bad), "-o", "json"],
            capture_output=True,
            text=True,
            env=cli_env,
            cwd=work,
            timeout=60,
        )
        assert refused.returncode != 0
        assert "/spec/extensions/azureKeyVault/colour" in refused.stdout + refused.stderr

        # A trust domain server joins and reports from the wheel's spirl-tds.
        join = httpx.post(
            f"{url}/v1/trust-domain-deployments/{tdd['id']}/join-tokens",
            json={"ttl_seconds": 600},
            headers={"Authorization": f"Bearer {token}"},
        ).json()["token"]
        tds, tds_announced = start_announced(
            [str(bin_dir / "spirl-tds"), "run", "--endpoint", url, "--join-token", join]
            + ["--trust-domain-deployment", tdd["id"], "--data-dir", str(tmp_path / "tds")]
            + ["--listen", "127.0.0.1:0"],
            log_path=tmp_path / "tds.log",
            env=env,
            cwd=work,
        )
        try:
            assert tds_announced["server_id"].startswith("tds-")
        finally:
            stop_process(tds, 10)

        # The Key Vault emulator starts from the wheel.
        emulator, emulator_announced = start_announced(
            [str(bin_dir / "spirl-keyvault-emulator"), "--listen", "127.0.0.1:0"]
            + ["--state-dir", str(tmp_path / "kv")],
            log_path=tmp_path / "kv.log",
            env=env,
            cwd=work,
        )
        assert emulator_announced

        # The Terraform provider installs from the wheel and plans against the control plane.
        home = tmp_path / "home"
        home.mkdir()
        tf_env = {
            k: v
            for k, v in cli_env.items()
            if k not in ("TF_CLI_CONFIG_FILE", "TF_PLUGIN_CACHE_DIR")
        }
        tf_env.update(HOME=str(home), CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1", TF_INPUT="0")
        run([spirlctl, "terraform", "install-provider"], env=tf_env, cwd=work)
        (work / "main.tf").write_text(TERRAFORM)
        terraform = terraform_binary()
        run([terraform, "init", "-no-color"], env=tf_env, cwd=work)
        plan = run([terraform, "plan", "-no-color"], env=tf_env, cwd=work)
        assert "spirl_trust_domain.td will be created" in plan
    finally:
        if emulator is not None:
            stop_process(emulator, 10)
        stop_process(serve, 10)
