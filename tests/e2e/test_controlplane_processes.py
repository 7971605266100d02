"""The control plane as real processes: spirlctl end to end, migrations, two replicas on PostgreSQL."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory

from controlplane.store.database import MIGRATIONS_DIR

from support.api import KEY_LIFECYCLE, KEY_MANAGER_AZURE
from support.controlplane import create_admin_token, start_control_plane
from support.processes import script

pytestmark = pytest.mark.e2e

SEED_KEY_MANAGER = """\
section: KeyManager
schema: v1
spec:
  extensions:
    azureKeyVault:
      vaultURL: "https://my-key-vault.vault.azure.net/"
"""


def test_spirlctl_end_to_end(tmp_path: Path):
    with start_control_plane(tmp_path) as cp:
        td = cp.spirlctl_json("trust-domain", "create", "example.org")
        tdd = cp.spirlctl_json(
            "trust-domain", "deployment", "create", "prod", "--trust-domain", td["id"]
        )
        cluster = cp.spirlctl_json(
            "cluster", "create", "east", "--trust-domain-deployment", tdd["id"]
        )
        assert (
            td["id"].startswith("td-")
            and tdd["id"].startswith("tdd-")
            and cluster["id"].startswith("c-")
        )

        (tmp_path / "key-manager.yaml").write_text(SEED_KEY_MANAGER)
        out = cp.spirlctl(
            "config",
            "set",
            "trust-domain-deployment",
            "--id",
            tdd["id"],
            str(tmp_path / "key-manager.yaml"),
        ).stdout
        assert "stored version 1" in out
        # Several documents from stdin, with expected version.
        both = KEY_MANAGER_AZURE.replace("my-key-vault", "vault-b") + "---\n" + KEY_LIFECYCLE
        out = cp.spirlctl(
            "config",
            "set",
            "trust-domain-deployment",
            "--id",
            tdd["id"],
            "-",
            "--expected-version",
            "1",
            input_text=both,
        ).stdout
        assert "stored version 2" in out
        conflict = cp.spirlctl(
            "config",
            "set",
            "trust-domain-deployment",
            "--id",
            tdd["id"],
            "-",
            "--expected-version",
            "1",
            input_text=KEY_LIFECYCLE,
            check=False,
        )
        assert (
            conflict.returncode == 1
            and "version 2" in conflict.stderr
            and "Traceback" not in conflict.stderr
        )

        valid = cp.spirlctl(
            "config", "validate", "cluster", "--id", cluster["id"], "-", input_text=KEY_LIFECYCLE
        )
        assert "valid" in valid.stdout and "nothing stored" in valid.stdout

        current = cp.spirlctl_json("config", "get", "trust-domain-deployment", "--id", tdd["id"])
        assert current["version"] == 2 and set(current["sections"]) == {
            "KeyManager",
            "KeyLifecycle",
        }
        history = cp.spirlctl(
            "config", "history", "trust-domain-deployment", "--id", tdd["id"]
        ).stdout
        assert history.splitlines()[0].split()[:2] == ["VERSION", "ACTOR"]
        diff = cp.spirlctl("config", "diff", "trust-domain-deployment", "--id", tdd["id"]).stdout
        assert "-      vaultURL: https://my-key-vault.vault.azure.net/" in diff
        assert "+      vaultURL: https://vault-b.vault.azure.net/" in diff
        assert "KeyLifecycle: added" in diff
        rolled = cp.spirlctl(
            "config", "rollback", "trust-domain-deployment", "--id", tdd["id"], "--to-version", "1"
        )
        assert "stored as version 3" in rolled.stdout
        removed = cp.spirlctl(
            "config", "delete-section", "trust-domain-deployment", "--id", tdd["id"], "KeyManager"
        )
        assert "stored version 4" in removed.stdout

        bad = SEED_KEY_MANAGER.replace("https://", "http://")
        failed = cp.spirlctl(
            "config", "set", "cluster", "--id", cluster["id"], "-", input_text=bad, check=False
        )
        assert failed.returncode == 1
        assert "KeyManager /spec/extensions/azureKeyVault/vaultURL: " in failed.stderr
        assert cp.spirlctl_json("config", "get", "cluster", "--id", cluster["id"])["version"] == 0

        join = cp.spirlctl_json("trust-domain", "deployment", "join-token", "--id", tdd["id"])
        assert join["token"]
        # By hand: the token alone on stdout, its id and how to revoke it on stderr.
        issued = cp.spirlctl("trust-domain", "deployment", "join-token", tdd["id"])
        token = issued.stdout.strip()
        assert token.startswith("spirljt_") and "\n" not in token
        token_id = issued.stderr.split()[2].rstrip(",")
        assert f"revoke-join-token {tdd['id']} --token-id {token_id}" in issued.stderr
        listed_tokens = cp.spirlctl("trust-domain", "deployment", "join-tokens", tdd["id"]).stdout
        assert listed_tokens.split()[:2] == ["ID", "STATE"] and token_id in listed_tokens
        assert token not in listed_tokens
        revoke = ("trust-domain", "deployment", "revoke-join-token", tdd["id"], "--token-id")
        assert token_id in cp.spirlctl(*revoke, token_id).stdout
        again = cp.spirlctl(*revoke, token_id, check=False)
        assert again.returncode == 1 and token_id in again.stderr
        # Not an id (".." would reach the deployment's own route): refused before any request.
        dots = cp.spirlctl(*revoke, "..", check=False)
        assert dots.returncode == 1 and "--token-id '..'" in dots.stderr
        assert cp.spirlctl_json("trust-domain", "deployment", "info", tdd["id"])["id"] == tdd["id"]
        states = cp.spirlctl_json("trust-domain", "deployment", "join-tokens", tdd["id"])
        assert [t["id"] for t in states] == [join["id"]]
        servers = cp.spirlctl("trust-domain", "deployment", "servers", "--id", tdd["id"]).stdout
        assert servers.split()[:4] == ["ID", "NAME", "CLUSTER", "STATE"]
        audit = cp.spirlctl_json("audit", "list")
        assert {"config.set", "config.rollback", "config.delete-section"} <= {
            e["action"] for e in audit
        }
        assert cp.admin_token not in json.dumps(audit) and join["token"] not in json.dumps(audit)
        listed = cp.spirlctl("trust-domain", "list", "-o", "yaml").stdout
        assert "name: example.org" in listed
        refused = cp.spirlctl("trust-domain", "delete", td["id"], check=False)
        assert refused.returncode == 1 and "delete them first" in refused.stderr


def test_spirlctl_login_and_clear_connection_errors(tmp_path: Path):
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    env.pop("SPIRL_ENDPOINT", None)
    env.pop("SPIRL_TOKEN", None)

    def run(*args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [script("spirlctl"), *args],
            capture_output=True,
            text=True,
            env=env,
            input=input_text,
            timeout=60,
        )

    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("spirlctl ")
    nowhere = run("trust-domain", "list", "--endpoint", "http://127.0.0.1:9")
    assert nowhere.returncode == 1 and "cannot reach the control plane" in nowhere.stderr
    assert "Traceback" not in nowhere.stderr and len(nowhere.stderr.strip().splitlines()) == 1
    with start_control_plane(tmp_path) as cp:
        bad = run("trust-domain", "list", "--endpoint", cp.url, "--token", "wrong")
        assert bad.returncode == 1 and "not authenticated" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
        login = run("login", "--endpoint", cp.url, "--token", "-", input_text=cp.admin_token + "\n")
        assert login.returncode == 0, login.stderr
        config_file = tmp_path / "cfg" / "spirl" / "config.json"
        assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
        assert run("trust-domain", "create", "example.org").returncode == 0
        assert "example.org" in run("trust-domain", "list").stdout


def test_serve_refuses_an_outdated_schema_unless_asked_to_migrate(tmp_path: Path):
    data = tmp_path / "data"
    result = subprocess.run(
        [script("spirl-controlplane"), "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "spirl-controlplane migrate" in result.stderr
    migrated = subprocess.run(
        [script("spirl-controlplane"), "migrate", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert f"empty -> {head}" in migrated.stdout
    token = create_admin_token(data)
    with start_control_plane(tmp_path, admin_token=token, name="after") as cp:
        assert httpx.get(f"{cp.url}/readyz").json() == {"status": "ready"}


def _sync(url: str, server: dict, params: dict, timeout: float = 40) -> dict:
    response = httpx.get(
        f"{url}/v1/servers/{server['server_id']}/sync",
        params=params,
        headers={"Authorization": f"Bearer {server['credential']}"},
        timeout=timeout,
    )
    response.raise_for_status()
    return response.json()


def test_two_replicas_on_postgres_wake_each_others_long_polls(tmp_path: Path, postgres_server):
    import psycopg

    url = postgres_server.create_database()
    token = create_admin_token(tmp_path / "a-data", url)
    with (
        start_control_plane(tmp_path, database_url=url, admin_token=token, name="a") as a,
        start_control_plane(tmp_path, database_url=url, admin_token=token, name="b") as b,
    ):
        with a.client() as client:
            td = client.post("/v1/trust-domains", json={"name": "example.org"}).json()
            tdd = client.post(
                "/v1/trust-domain-deployments", json={"name": "p", "trust_domain_id": td["id"]}
            ).json()
            join = client.post(
                f"/v1/trust-domain-deployments/{tdd['id']}/join-tokens", json={}
            ).json()
        server = httpx.post(
            f"{b.url}/v1/servers/register",
            json={"name": "s"},
            headers={"Authorization": f"Bearer {join['token']}"},
        ).json()
        first = _sync(b.url, server, {"wait": 0})
        have = {
            "config_version": first["config"]["version"],
            "bundle_version": first["bundle"]["version"],
        }

        def held_poll_sees_write(new_yaml: str, before_write=lambda: None) -> dict:  # type: ignore[no-untyped-def]
            result: dict = {}
            poll = threading.Thread(
                target=lambda: result.update(_sync(b.url, server, {**have, "wait": 30}))
            )
            poll.start()
            time.sleep(0.5)  # let the poll reach replica b and wait there
            before_write()
            with a.client() as client:
                assert (
                    client.put(
                        f"/v1/config/trust-domain-deployment/{tdd['id']}", json={"yaml": new_yaml}
                    ).status_code
                    == 200
                )
            poll.join(timeout=20)
            assert not poll.is_alive(), "replica b never heard of the write on replica a"
            return result

        reply = held_poll_sees_write(KEY_MANAGER_AZURE)
        assert reply["changed"] is True and "KeyManager" in reply["config"]["sections"]
        have["config_version"] = reply["config"]["version"]

        # Cut the LISTEN connections and write at once: the notification is sent while nobody
        # listens, so replica b only learns of the write by re-reading after it reconnects.
        conninfo = f"host=127.0.0.1 port={postgres_server.port} user=postgres dbname=postgres"
        killed: list = []

        def cut_listeners() -> None:
            with psycopg.connect(conninfo, autocommit=True) as admin:
                killed.extend(
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
                    ).fetchall()
                )

        reply = held_poll_sees_write(KEY_LIFECYCLE, before_write=cut_listeners)
        assert len(killed) == 2  # one listener connection per replica
        assert reply["changed"] is True and "KeyLifecycle" in reply["config"]["sections"]


def test_metrics_on_a_separate_address_need_no_token(tmp_path: Path):
    with start_control_plane(tmp_path, extra_args=["--metrics-listen", "127.0.0.1:0"]) as cp:
        metrics_url = cp.process.announcement["metrics_url"]
        with cp.client() as client:
            client.post("/v1/trust-domains", json={"name": "example.org"})
        text = httpx.get(metrics_url, timeout=10).text
        assert "spirl_longpolls_waiting 0" in text
        assert 'route="/v1/trust-domains"' in text
        assert httpx.get(f"{cp.url}/metrics", timeout=10).status_code == 401


def test_tokens_are_listed_without_secrets_and_can_be_revoked(tmp_path: Path):
    with start_control_plane(tmp_path) as cp:
        db = ["--data-dir", str(cp.data_dir)]
        created = subprocess.run(
            [
                script("spirl-controlplane"),
                "token",
                "create",
                "--role",
                "viewer",
                "--name",
                "ci",
                "-o",
                "json",
                *db,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        viewer = json.loads(created.stdout)
        listed = subprocess.run(
            [script("spirl-controlplane"), "token", "list", "-o", "json", *db],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert viewer["token"] not in listed and cp.admin_token not in listed
        assert {t["name"]: t["role"] for t in json.loads(listed)}["ci"] == "viewer"
        revoked = subprocess.run(
            [script("spirl-controlplane"), "token", "revoke", viewer["id"], *db],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert revoked.returncode == 0 and viewer["id"] in revoked.stdout
        response = httpx.get(
            f"{cp.url}/v1/trust-domains", headers={"Authorization": f"Bearer {viewer['token']}"}
        )
        assert response.status_code == 401
        missing = subprocess.run(
            [script("spirl-controlplane"), "token", "revoke", "tok-nope", *db],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert missing.returncode == 1 and "tok-nope not found" in missing.stderr
