"""The raw in-process HSM signing rate: the limit every other figure is measured against.

"raw" is python-pkcs11's ``sign`` on a key handle, under the process-wide PKCS#11 lock, one
thread, one process: what the HSM gives with nothing of ours around it. "key store" is the same
signature through HsmKeyStore.sign_digest (lookup cache, digest checks, DER encoding).
"""

from __future__ import annotations

import hashlib

import pkcs11

from benchmarks.harness import Rate, measure
from signserver.hsm.algorithms import KeyAlgorithm, SignatureAlgorithm
from signserver.hsm.module import pkcs11_lock
from signserver.service import SignService

CASES = [
    (KeyAlgorithm.RSA_2048, SignatureAlgorithm.RSA_PKCS1V15_SHA256),
    (KeyAlgorithm.EC_P256, SignatureAlgorithm.ECDSA_SHA256),
]


def run(service: SignService, seconds: float) -> list[tuple[KeyAlgorithm, Rate, Rate]]:
    """Measure raw and key-store rates for each case; returns (algorithm, raw, key store)."""
    return [(algorithm, *_measure_case(service, algorithm, scheme, seconds)) for algorithm, scheme in CASES]


def _measure_case(service: SignService, algorithm: KeyAlgorithm, scheme: SignatureAlgorithm,
                  seconds: float) -> tuple[Rate, Rate]:
    digest = hashlib.sha256(b"benchmark").digest()
    key = service.generate_key(algorithm, f"bench-{algorithm.value}")
    raw_id = bytes.fromhex(key.key_id)
    mechanism, parameter = scheme.mechanism()
    token_input = scheme.token_input(digest)
    session = service.keys.session  # the raw figure is measured beneath the key store on purpose
    template = {pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY, pkcs11.Attribute.ID: raw_id}
    handle = session.run(lambda s: next(s.get_objects(template)), "find the key")

    def raw_sign() -> bytes:
        with pkcs11_lock():
            return handle.sign(token_input, mechanism=mechanism, mechanism_param=parameter)

    raw = measure(f"raw {algorithm.value}", raw_sign, seconds)
    store = measure(f"key store {algorithm.value}",
                    lambda: service.keys.sign_digest(key.key_id, digest, scheme), seconds)
    return raw, store
