"""The whole flow over TLS with a CA made in the test: spirlctl, spirl-tds (join, long-poll,
status) and the Terraform provider (the real CLI) against `serve --tls-cert --tls-key`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.emulators.tls import ensure_tls_files

from support.controlplane import start_control_plane
from support.processes import script
from support.tds import SimClock, start_tds, wait_for

# The Terraform harness lives beside the Terraform tests (tests/terraform/conftest.py does the same).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "terraform"))
from tf_harness import Terraform  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.terraform]

LIFECYCLE = "section: KeyLifecycle\nschema: v1\nspec:\n  jwtKeyTTL: 6h\n"

PROVIDER_CONFIG = """
terraform {
  required_providers {
    spirl = { source = "spirl/spirl", version = "0.1.0" }
  }
}

provider "spirl" {
  ca_file = "%s"
}

resource "spirl_trust_domain" "tf" {
  name = "tf.example.org"
}
"""


def test_the_whole_flow_over_tls(tmp_path: Path) -> None:
    tls = ensure_tls_files(tmp_path / "tls")  # a CA and a 127.0.0.1 certificate, made here
    with start_control_plane(
        tmp_path, tls=tls, extra_args=["--metrics-listen", "127.0.0.1:0"]
    ) as cp:
        assert cp.url.startswith("https://127.0.0.1:")
        # The separate metrics listener stays plain HTTP, as before.
        metrics_url = cp.process.announcement["metrics_url"]
        assert metrics_url.startswith("http://")
        assert httpx.get(metrics_url, timeout=10).status_code == 200

        # spirlctl: $SPIRL_CA_FILE, and --ca-file; without the CA it refuses the server.
        td = cp.spirlctl_json("trust-domain", "create", "example.org")
        untrusted = cp.spirlctl(
            "trust-domain", "list", env={"SPIRL_ENDPOINT": cp.url, "SPIRL_TOKEN": "x"}, check=False
        )
        assert untrusted.returncode == 1
        assert "--ca-file" in untrusted.stderr and len(untrusted.stderr.strip().splitlines()) == 1
        flag_env = {"SPIRL_ENDPOINT": cp.url, "SPIRL_TOKEN": cp.admin_token}
        tdd = json.loads(
            cp.spirlctl(
                "trust-domain",
                "deployment",
                "create",
                "prod",
                "--trust-domain",
                td["id"],
                "--ca-file",
                str(tls.ca_file),
                "-o",
                "json",
                env=flag_env,
            ).stdout
        )
        cluster = cp.spirlctl_json(
            "cluster", "create", "east", "--trust-domain-deployment", tdd["id"]
        )
        # Plain HTTP to the TLS port gets no answer from the API.
        plain = cp.spirlctl(
            "trust-domain", "list", "--endpoint", cp.url.replace("https", "http"), check=False
        )
        assert plain.returncode == 1 and "example.org" not in plain.stdout

        # spirl-tds joins with a token from a file, long-polls and reports over TLS.
        token = cp.spirlctl_json("trust-domain", "deployment", "join-token", "--id", tdd["id"])
        token_file = tmp_path / "join-token"
        token_file.write_text(token["token"] + "\n")
        token_file.chmod(0o600)
        tds = start_tds(
            cp,
            tdd_id=tdd["id"],
            cluster_id=cluster["id"],
            tmp=tmp_path,
            name="a",
            clock=SimClock(tmp_path / "clock"),
            join=False,
            extra_args=["--join-token-file", str(token_file), "--ca-file", str(tls.ca_file)],
        )
        try:
            cmdline = Path(f"/proc/{tds.process.pid}/cmdline").read_bytes()
            assert token["token"].encode() not in cmdline

            def reported(version: int | None = None) -> Any:
                items = cp.spirlctl_json("trust-domain", "deployment", "servers", "--id", tdd["id"])
                return (
                    len(items) == 1
                    and items[0]["health"] == "HEALTHY"
                    and items[0]["applied_version"] is not None
                    and (version is None or items[0]["applied_version"] == version)
                    and items[0]
                )

            first = wait_for(reported, timeout=30, what="the server's first status report")
            doc = tmp_path / "lifecycle.yaml"
            doc.write_text(LIFECYCLE)
            cp.spirlctl_json(
                "config", "set", "trust-domain-deployment", "--id", tdd["id"], str(doc)
            )
            # The long-poll delivers the change; the report says it is applied.
            changed = wait_for(
                lambda: (s := tds.status())["applied_version"] != first["applied_version"] and s,
                timeout=30,
                what="the new config over the long-poll",
            )
            wait_for(lambda: reported(changed["applied_version"]), timeout=30, what="the report")
        finally:
            tds.stop()

        # The Terraform provider verifies with ca_file (no $SPIRL_CA_FILE in its environment).
        work = tmp_path / "tf"
        work.mkdir()
        (work / "main.tf").write_text(PROVIDER_CONFIG % tls.ca_file)
        tf = Terraform.isolated(
            tmp_path, work, {"SPIRL_ENDPOINT": cp.url, "SPIRL_TOKEN": cp.admin_token}
        )
        tf.env.pop("SPIRL_CA_FILE", None)
        tf.init()
        tf.apply()
        with cp.client() as client:
            names = [t["name"] for t in client.get("/v1/trust-domains").json()["items"]]
        assert "tf.example.org" in names


def test_serve_refuses_unusable_tls_files_and_warns_about_plain_http_beyond_loopback(
    tmp_path: Path,
) -> None:
    tls = ensure_tls_files(tmp_path / "tls")
    other = ensure_tls_files(tmp_path / "other")
    serve = [script("spirl-controlplane"), "serve", "--data-dir", str(tmp_path / "data")]

    def refused(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*serve, *args], capture_output=True, text=True, timeout=60)

    alone = refused("--tls-cert", str(tls.cert_file))
    assert alone.returncode == 2 and "--tls-key" in alone.stderr
    mismatch = refused("--tls-cert", str(tls.cert_file), "--tls-key", str(other.key_file))
    assert mismatch.returncode == 1 and str(other.key_file) in mismatch.stderr
    assert len(mismatch.stderr.strip().splitlines()) == 1

    with start_control_plane(tmp_path, extra_args=["--listen", "0.0.0.0:0"]) as cp:
        assert cp.url.startswith("http://0.0.0.0:")
        assert "WARNING: serving plain HTTP on 0.0.0.0:0" in cp.process.log_text()
