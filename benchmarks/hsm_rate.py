"""The raw in-process HSM signing rate: the limit every other figure is measured against.

"raw" is python-pkcs11's ``sign`` on a key handle, under the process-wide PKCS#11 lock, one
thread, one process: what the HSM gives with nothing of ours around it. "key store" is the same
signature through HsmKeyStore.sign_digest (lookup cache, digest checks, DER encoding).
"""

from __future__ import annotations

import hashlib
from typing import Callable

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
    raw = measure(f"raw {algorithm.value}", _raw_signer(service, key.key_id, scheme, digest), seconds)
    store = measure(f"key store {algorithm.value}",
                    lambda: service.keys.sign_digest(key.key_id, digest, scheme), seconds)
    return raw, store


def raw_probe(service: SignService, seconds: float) -> Callable[[], Rate]:
    """A measurement of the raw RSA-2048 rate for ``seconds``, to repeat around each figure: the
    machine's speed can change by a third within a minute (a virtual machine's neighbours), and a
    figure is best compared with the raw rate of its own moment, not of the run's start."""
    scheme = SignatureAlgorithm.RSA_PKCS1V15_SHA256
    key = service.generate_key(KeyAlgorithm.RSA_2048, "bench-raw-probe")
    sign = _raw_signer(service, key.key_id, scheme, hashlib.sha256(b"probe").digest())
    return lambda: measure("raw rsa-2048", sign, seconds)


def _raw_signer(service: SignService, key_id: str, scheme: SignatureAlgorithm, digest: bytes) -> Callable[[], bytes]:
    mechanism, parameter = scheme.mechanism()
    token_input = scheme.token_input(digest)
    session = service.keys.session  # the raw figure is measured beneath the key store on purpose
    template = {pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY, pkcs11.Attribute.ID: bytes.fromhex(key_id)}
    handle = session.run(lambda s: next(s.get_objects(template)), "find the key")

    def raw_sign() -> bytes:
        with pkcs11_lock():
            return handle.sign(token_input, mechanism=mechanism, mechanism_param=parameter)
    return raw_sign
