"""The one contract test suite every KeyManager implementation passes (DESIGN.md §4).

How to reuse it for a new key manager::

    # tests/keymanagers/test_my_manager.py
    from collections.abc import Iterator
    import pytest
    from contract import KeyManagerContract   # tests/keymanagers is on sys.path (conftest.py)

    class TestMyManagerContract(KeyManagerContract):
        @pytest.fixture
        def key_manager(self, tmp_path) -> Iterator[KeyManager]:
            manager = MyManager(...)
            yield manager
            manager.close()

The fixture must yield a working, healthy manager (``check()`` passes). It may already
hold keys made by other tests (a shared backing service): the suite only uses key ids
it makes unique per test and never asserts that a listing is exactly its own keys.
The suite closes the manager itself in one test; closing again must be harmless.

Class attributes a subclass may tune:

- ``key_types``: the key types to exercise (default: all four). Only the per-type test
  generates an RSA-4096 key (slow), once.
- ``thread_count`` / ``signs_per_thread``: size of the parallel-signing smoke test.

Every signature is verified with ``cryptography`` from the public key the manager
returned, so a manager cannot pass by being consistent with itself only.
"""

from __future__ import annotations

import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import pytest

from controlplane.keymanagers.base import (
    KeyManager,
    KeyManagerError,
    KeyNotFoundError,
    KeyType,
    PublicKey,
    SigningAlgorithm,
)
from controlplane.keymanagers.signatures import (
    digest,
    hash_for_key_type,
    key_type_of_public_key,
    verify_digest_signature,
)

__all__ = ["KeyManagerContract", "assert_signs_and_verifies"]


def _unique_id(label: str) -> str:
    return f"contract-{label}-{secrets.token_hex(4)}"


def assert_signs_and_verifies(
    manager: KeyManager, key: PublicKey, *, rsa_pss: bool = False, message: bytes = b"contract"
) -> bytes:
    """Sign a digest with `key` and check the signature with its public key; returns it."""
    algorithm = SigningAlgorithm(hash=hash_for_key_type(key.key_type), rsa_pss=rsa_pss)
    data_digest = digest(message, algorithm.hash)
    signature = manager.sign_digest(key.key_id, data_digest, algorithm)
    assert isinstance(signature, bytes) and signature
    assert verify_digest_signature(key.public_key_der, data_digest, signature, algorithm), (
        f"signature by {key.key_id} ({key.key_type.value}) does not verify"
    )
    # A signature over another digest must not verify: the check above can fail.
    other = digest(message + b"!", algorithm.hash)
    assert not verify_digest_signature(key.public_key_der, other, signature, algorithm)
    return signature


class KeyManagerContract:
    """Subclass with a `key_manager` fixture; see the module docstring."""

    key_types: ClassVar[tuple[KeyType, ...]] = tuple(KeyType)
    thread_count: ClassVar[int] = 8
    signs_per_thread: ClassVar[int] = 10

    @pytest.fixture
    def key_manager(self) -> Any:  # pragma: no cover - replaced by subclasses
        raise NotImplementedError("subclasses of KeyManagerContract provide a key_manager fixture")

    # -- health ------------------------------------------------------------------------------

    def test_type_name_and_protocol(self, key_manager: KeyManager) -> None:
        assert isinstance(key_manager, KeyManager)
        assert key_manager.type_name in ("default", "azureKeyVault", "webhook")

    def test_check_passes_on_healthy_manager(self, key_manager: KeyManager) -> None:
        key_manager.check()

    # -- every key type ---------------------------------------------------------------------------

    def test_generate_sign_verify_each_key_type(self, key_manager: KeyManager) -> None:
        for key_type in self.key_types:
            key_id = _unique_id(key_type.value)
            key = key_manager.generate_key(key_id, key_type)
            assert key.key_id == key_id
            assert key.key_type is key_type
            assert key_type_of_public_key(key.public_key_der) is key_type
            fetched = key_manager.get_public_key(key_id)
            assert fetched.public_key_der == key.public_key_der
            assert fetched.key_type is key_type
            assert_signs_and_verifies(key_manager, key)
            if not key_type.is_ec:
                assert_signs_and_verifies(key_manager, key, rsa_pss=True)

    def test_key_type_given_as_string(self, key_manager: KeyManager) -> None:
        key = key_manager.generate_key(_unique_id("str"), "ec-p256")  # type: ignore[arg-type]
        assert key.key_type is KeyType.EC_P256

    # -- rejected input ----------------------------------------------------------------------

    def test_empty_key_id_rejected(self, key_manager: KeyManager) -> None:
        with pytest.raises(KeyManagerError):
            key_manager.generate_key("", KeyType.EC_P256)

    @pytest.mark.parametrize("bad_type", ["", "ec-p521", None])
    def test_empty_or_unknown_key_type_rejected(
        self, key_manager: KeyManager, bad_type: Any
    ) -> None:
        key_id = _unique_id("badtype")
        with pytest.raises(KeyManagerError):
            key_manager.generate_key(key_id, bad_type)
        # Nothing was created under that id.
        with pytest.raises(KeyNotFoundError):
            key_manager.get_public_key(key_id)

    def test_wrong_digest_length_rejected(self, key_manager: KeyManager) -> None:
        key = key_manager.generate_key(_unique_id("digest"), KeyType.EC_P256)
        with pytest.raises(KeyManagerError):
            key_manager.sign_digest(
                key.key_id, b"short", SigningAlgorithm(hash_for_key_type(key.key_type))
            )

    # -- overwrite ---------------------------------------------------------------------------

    def test_overwriting_an_id_makes_old_key_unusable(self, key_manager: KeyManager) -> None:
        key_id = _unique_id("overwrite")
        old = key_manager.generate_key(key_id, KeyType.EC_P256)
        new = key_manager.generate_key(key_id, KeyType.EC_P256)
        assert new.public_key_der != old.public_key_der
        assert key_manager.get_public_key(key_id).public_key_der == new.public_key_der
        algorithm = SigningAlgorithm(hash_for_key_type(KeyType.EC_P256))
        data_digest = digest(b"after overwrite", algorithm.hash)
        signature = key_manager.sign_digest(key_id, data_digest, algorithm)
        assert verify_digest_signature(new.public_key_der, data_digest, signature, algorithm)
        assert not verify_digest_signature(old.public_key_der, data_digest, signature, algorithm)
        listed = [k for k in key_manager.list_public_keys() if k.key_id == key_id]
        assert [k.public_key_der for k in listed] == [new.public_key_der]

    def test_overwrite_with_another_key_type(self, key_manager: KeyManager) -> None:
        key_id = _unique_id("retype")
        key_manager.generate_key(key_id, KeyType.EC_P256)
        new = key_manager.generate_key(key_id, KeyType.EC_P384)
        assert key_manager.get_public_key(key_id).key_type is KeyType.EC_P384
        assert_signs_and_verifies(key_manager, new)

    # -- not found ---------------------------------------------------------------------------

    def test_unknown_id_is_not_found(self, key_manager: KeyManager) -> None:
        key_id = _unique_id("missing")
        with pytest.raises(KeyNotFoundError):
            key_manager.get_public_key(key_id)
        algorithm = SigningAlgorithm(hash_for_key_type(KeyType.EC_P256))
        with pytest.raises(KeyNotFoundError):
            key_manager.sign_digest(key_id, digest(b"x", algorithm.hash), algorithm)

    # -- listing -----------------------------------------------------------------------------

    def test_list_public_keys(self, key_manager: KeyManager) -> None:
        first = key_manager.generate_key(_unique_id("list-a"), KeyType.EC_P256)
        second = key_manager.generate_key(_unique_id("list-b"), KeyType.EC_P384)
        listed = {k.key_id: k for k in key_manager.list_public_keys()}
        for key in (first, second):
            assert key.key_id in listed
            assert listed[key.key_id].public_key_der == key.public_key_der
            assert listed[key.key_id].key_type is key.key_type
        all_ids = [k.key_id for k in key_manager.list_public_keys()]
        assert len(all_ids) == len(set(all_ids)), "an id is listed twice"

    # -- lifecycle ---------------------------------------------------------------------------

    def test_close_is_idempotent(self, key_manager: KeyManager) -> None:
        key_manager.close()
        key_manager.close()

    # -- concurrency -------------------------------------------------------------------------

    def test_parallel_signs(self, key_manager: KeyManager) -> None:
        keys = [
            key_manager.generate_key(_unique_id("par-256"), KeyType.EC_P256),
            key_manager.generate_key(_unique_id("par-384"), KeyType.EC_P384),
        ]
        errors: list[BaseException] = []
        errors_lock = threading.Lock()

        def work(worker: int) -> int:
            key = keys[worker % len(keys)]
            done = 0
            for i in range(self.signs_per_thread):
                try:
                    assert_signs_and_verifies(key_manager, key, message=f"{worker}-{i}".encode())
                    done += 1
                except BaseException as exc:  # collected and re-raised below with context
                    with errors_lock:
                        errors.append(exc)
            return done

        with ThreadPoolExecutor(max_workers=self.thread_count) as pool:
            counts = list(pool.map(work, range(self.thread_count)))
        assert not errors, f"{len(errors)} parallel signs failed, first: {errors[0]!r}"
        assert sum(counts) == self.thread_count * self.signs_per_thread

    def test_parallel_generate_distinct_ids(self, key_manager: KeyManager) -> None:
        ids = [_unique_id(f"pgen-{i}") for i in range(6)]
        with ThreadPoolExecutor(max_workers=6) as pool:
            keys = list(
                pool.map(lambda key_id: key_manager.generate_key(key_id, KeyType.EC_P256), ids)
            )
        assert len({k.public_key_der for k in keys}) == len(ids)
        listed = {k.key_id for k in key_manager.list_public_keys()}
        assert set(ids) <= listed
        for key in keys:
            assert_signs_and_verifies(key_manager, key)
