"""Many threads signing through one key store: no crash, every signature valid."""

from __future__ import annotations

import hashlib
import threading

import pytest

from signserver.hsm.algorithms import KeyAlgorithm, SignatureAlgorithm
from tests.conftest import require_key_algorithm
from tests.hsm.test_keystore import verify

pytestmark = pytest.mark.one_store  # touches no store

THREADS = 16
SIGNATURES_PER_THREAD = 200


@pytest.mark.parametrize("key_algorithm,scheme", [
    (KeyAlgorithm.RSA_2048, SignatureAlgorithm.RSA_PKCS1V15_SHA256),
    (KeyAlgorithm.EC_P256, SignatureAlgorithm.ECDSA_SHA256),
], ids=["rsa-2048", "ec-p256"])
def test_sixteen_threads_sign_concurrently(keystore, capabilities, label, key_algorithm, scheme):
    require_key_algorithm(capabilities, key_algorithm)
    key = keystore.generate(key_algorithm, label)
    public = keystore.public_key(key.key_id)
    results: dict[int, list[tuple[bytes, bytes]]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(index: int) -> None:
        try:
            start.wait()
            produced = []
            for n in range(SIGNATURES_PER_THREAD):
                message = f"thread {index} message {n}".encode()
                produced.append((message, keystore.sign_digest(key.key_id, hashlib.sha256(message).digest(), scheme)))
            results[index] = produced
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors, errors[:3]
    assert sum(len(r) for r in results.values()) == THREADS * SIGNATURES_PER_THREAD
    for produced in results.values():
        for message, signature in produced:
            verify(public, signature, scheme, message)
