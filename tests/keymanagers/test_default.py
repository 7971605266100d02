"""The default key manager: the shared contract plus on-disk wrapping, KEK handling, files."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from controlplane.keymanagers.base import (
    HashAlgorithm,
    KeyManagerError,
    KeyNotFoundError,
    KeyType,
    SigningAlgorithm,
)
from controlplane.keymanagers.default import DefaultKeyManager, load_or_create_kek
from controlplane.keymanagers.signatures import digest, verify_digest_signature

from contract import KeyManagerContract, assert_signs_and_verifies


class TestDefaultKeyManagerContract(KeyManagerContract):
    @pytest.fixture
    def key_manager(self, default_key_manager: DefaultKeyManager) -> Iterator[DefaultKeyManager]:
        yield default_key_manager


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_and_folder_are_private(tmp_path: Path, kek: bytes) -> None:
    folder = tmp_path / "keys"
    manager = DefaultKeyManager(folder, kek)
    manager.generate_key("a", KeyType.EC_P256)
    files = list(folder.iterdir())
    assert _mode(folder) == 0o700
    assert len(files) == 1 and files[0].name.endswith(".key.json")
    assert _mode(files[0]) == 0o600
    # No temp file is left behind by the atomic write.
    assert not [f for f in files if f.name.endswith(".tmp")]


def test_loose_existing_folder_is_tightened(tmp_path: Path, kek: bytes) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    DefaultKeyManager(folder, kek)
    assert _mode(folder) == 0o700


def test_private_key_is_wrapped_not_plain(tmp_path: Path, kek: bytes) -> None:
    folder = tmp_path / "keys"
    manager = DefaultKeyManager(folder, kek)
    manager.generate_key("wrapped", KeyType.EC_P256)
    text = next(folder.iterdir()).read_text()
    record = json.loads(text)
    assert record["key_id"] == "wrapped"
    assert "PRIVATE KEY" not in text
    # The wrapped blob is ciphertext: it does not parse as a key.
    with pytest.raises(ValueError):
        serialization.load_der_private_key(base64.b64decode(record["wrapped_private_key"]), None)


def test_keys_survive_a_new_instance(tmp_path: Path, kek: bytes) -> None:
    folder = tmp_path / "keys"
    first = DefaultKeyManager(folder, kek)
    keys = [first.generate_key("x", KeyType.EC_P384), first.generate_key("y", KeyType.RSA_2048)]
    first.close()
    second = DefaultKeyManager(folder, kek)
    second.check()
    assert [k.key_id for k in second.list_public_keys()] == ["x", "y"]
    for key in keys:
        assert second.get_public_key(key.key_id).public_key_der == key.public_key_der
        assert_signs_and_verifies(second, key)


def test_wrong_kek_says_the_kek_does_not_match(tmp_path: Path, kek: bytes) -> None:
    folder = tmp_path / "keys"
    DefaultKeyManager(folder, kek).generate_key("k", KeyType.EC_P256)
    other = DefaultKeyManager(folder, secrets.token_bytes(32))
    with pytest.raises(KeyManagerError, match="KEK.*does not match"):
        other.check()
    with pytest.raises(KeyManagerError, match="does not match"):
        other.get_public_key("k")


def test_key_file_copied_under_another_id_does_not_unwrap(tmp_path: Path, kek: bytes) -> None:
    folder = tmp_path / "keys"
    manager = DefaultKeyManager(folder, kek)
    manager.generate_key("victim", KeyType.EC_P256)
    manager.generate_key("attacker", KeyType.EC_P256)
    victim_file = manager._path("victim")
    attacker_file = manager._path("attacker")
    record = json.loads(victim_file.read_text())
    record["key_id"] = "attacker"  # the ciphertext is bound to "victim" by associated data
    attacker_file.write_text(json.dumps(record))
    fresh = DefaultKeyManager(folder, kek)
    with pytest.raises(KeyManagerError, match="does not match"):
        fresh.sign_digest("attacker", b"\0" * 32, SigningAlgorithm(HashAlgorithm.SHA256))


def test_overwrite_by_another_instance_is_seen(tmp_path: Path, kek: bytes) -> None:
    folder = tmp_path / "keys"
    a = DefaultKeyManager(folder, kek)
    b = DefaultKeyManager(folder, kek)
    old = a.generate_key("shared", KeyType.EC_P256)
    assert b.get_public_key("shared").public_key_der == old.public_key_der
    new = b.generate_key("shared", KeyType.EC_P256)
    # `a` cached the old key; it must notice the file changed and sign with the new one.
    assert a.get_public_key("shared").public_key_der == new.public_key_der
    assert_signs_and_verifies(a, new)


def _sign_verifies(manager: DefaultKeyManager, key_id: str, public_der: bytes) -> bool:
    algorithm = SigningAlgorithm(HashAlgorithm.SHA256)
    data = digest(b"which key signs?", algorithm.hash)
    signature = manager.sign_digest(key_id, data, algorithm)
    return verify_digest_signature(public_der, data, signature, algorithm)


def _generate_in_another_process(folder: Path, kek: bytes, key_id: str) -> bytes:
    """Overwrite `key_id` from a separate Python process; returns the new public key DER."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from controlplane.keymanagers.base import KeyType\n"
        "from controlplane.keymanagers.default import DefaultKeyManager\n"
        "kek = bytes.fromhex(sys.stdin.read().strip())\n"  # stdin: keep the KEK out of argv
        "key = DefaultKeyManager(Path(sys.argv[1]), kek).generate_key(sys.argv[2], KeyType.EC_P256)\n"
        "sys.stdout.write(key.public_key_der.hex())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(folder), key_id],
        input=kek.hex(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return bytes.fromhex(done.stdout)


def test_sign_sees_overwrite_by_another_instance_at_once(tmp_path: Path, kek: bytes) -> None:
    # No get_public_key in between: sign_digest's own fast path must notice the change.
    folder = tmp_path / "keys"
    a = DefaultKeyManager(folder, kek, recheck_seconds=3600)
    b = DefaultKeyManager(folder, kek, recheck_seconds=3600)
    old = a.generate_key("shared", KeyType.EC_P256)
    assert _sign_verifies(a, "shared", old.public_key_der)
    new = b.generate_key("shared", KeyType.EC_P256)
    assert _sign_verifies(a, "shared", new.public_key_der)
    assert not _sign_verifies(a, "shared", old.public_key_der)


def test_sign_sees_release_by_another_instance_at_once(tmp_path: Path, kek: bytes) -> None:
    folder = tmp_path / "keys"
    a = DefaultKeyManager(folder, kek, recheck_seconds=3600)
    b = DefaultKeyManager(folder, kek, recheck_seconds=3600)
    key = a.generate_key("doomed", KeyType.EC_P256)
    assert _sign_verifies(a, "doomed", key.public_key_der)
    b.release_key("doomed")
    with pytest.raises(KeyNotFoundError):
        a.sign_digest("doomed", b"\0" * 32, SigningAlgorithm(HashAlgorithm.SHA256))


def test_sign_rechecks_files_another_process_replaced(tmp_path: Path, kek: bytes) -> None:
    # Another process bumps no counter of ours: the file is re-checked once recheck_seconds
    # have passed since the last check (0 here: every signature).
    folder = tmp_path / "keys"
    manager = DefaultKeyManager(folder, kek, recheck_seconds=0)
    old = manager.generate_key("shared", KeyType.EC_P256)
    assert _sign_verifies(manager, "shared", old.public_key_der)
    new_der = _generate_in_another_process(folder, kek, "shared")
    assert new_der != old.public_key_der
    assert _sign_verifies(manager, "shared", new_der)


def test_public_key_lookup_refreshes_the_signing_path(tmp_path: Path, kek: bytes) -> None:
    # Within the recheck window, a lookup that sees the file changed also moves signing on.
    folder = tmp_path / "keys"
    manager = DefaultKeyManager(folder, kek, recheck_seconds=3600)
    old = manager.generate_key("shared", KeyType.EC_P256)
    assert _sign_verifies(manager, "shared", old.public_key_der)
    new_der = _generate_in_another_process(folder, kek, "shared")
    assert manager.get_public_key("shared").public_key_der == new_der
    assert _sign_verifies(manager, "shared", new_der)


def test_removed_file_is_not_found(tmp_path: Path, kek: bytes) -> None:
    manager = DefaultKeyManager(tmp_path / "keys", kek)
    manager.generate_key("gone", KeyType.EC_P256)
    manager._path("gone").unlink()
    with pytest.raises(KeyNotFoundError):
        manager.get_public_key("gone")


def test_bad_kek_length_rejected(tmp_path: Path) -> None:
    with pytest.raises(KeyManagerError, match="32 bytes"):
        DefaultKeyManager(tmp_path, b"short")


def test_closed_manager_refuses_work(default_key_manager: DefaultKeyManager) -> None:
    key = default_key_manager.generate_key("k", KeyType.EC_P256)
    default_key_manager.close()
    with pytest.raises(KeyManagerError, match="closed"):
        default_key_manager.get_public_key(key.key_id)


def test_check_fails_on_unwritable_folder(tmp_path: Path, kek: bytes) -> None:
    folder = tmp_path / "keys"
    manager = DefaultKeyManager(folder, kek)
    folder.rmdir()
    folder.write_text("not a folder")
    with pytest.raises(KeyManagerError, match="not usable"):
        manager.check()


# -- KEK loading ---------------------------------------------------------------------------------


def test_kek_generated_into_data_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPIRL_KEK", raising=False)
    first = load_or_create_kek(tmp_path / "data")
    assert len(first) == 32
    kek_file = tmp_path / "data" / "kek"
    assert _mode(kek_file) == 0o600
    assert base64.b64decode(kek_file.read_text()) == first
    assert load_or_create_kek(tmp_path / "data") == first


def test_kek_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kek = secrets.token_bytes(32)
    monkeypatch.setenv("MY_KEK", base64.b64encode(kek).decode())
    assert load_or_create_kek(tmp_path, env_var="MY_KEK") == kek
    assert not (tmp_path / "kek").exists()


def test_kek_from_file_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kek = secrets.token_bytes(32)
    path = tmp_path / "kek.b64"
    path.write_text(base64.b64encode(kek).decode() + "\n")
    monkeypatch.setenv("SPIRL_KEK", base64.b64encode(secrets.token_bytes(32)).decode())
    assert load_or_create_kek(tmp_path / "data", kek_file=path) == kek


def test_missing_kek_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KeyManagerError, match="does not exist"):
        load_or_create_kek(tmp_path, kek_file=tmp_path / "nope")


@pytest.mark.parametrize(
    ("value", "reason"),
    [("not base64!!", "not valid base64"), (base64.b64encode(b"x" * 16).decode(), "16 bytes")],
)
def test_bad_kek_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.setenv("SPIRL_KEK", value)
    with pytest.raises(KeyManagerError, match=reason):
        load_or_create_kek(tmp_path)


def test_release_key_removes_the_file(default_key_manager: DefaultKeyManager) -> None:
    key = default_key_manager.generate_key("old", KeyType.EC_P256)
    default_key_manager.generate_key("kept", KeyType.EC_P256)
    default_key_manager.release_key(key.key_id)
    assert not default_key_manager._path("old").exists()
    assert [k.key_id for k in default_key_manager.list_public_keys()] == ["kept"]
    with pytest.raises(KeyNotFoundError):
        default_key_manager.sign_digest("old", b"\0" * 32, SigningAlgorithm(HashAlgorithm.SHA256))
    with pytest.raises(KeyNotFoundError):
        default_key_manager.release_key("old")
