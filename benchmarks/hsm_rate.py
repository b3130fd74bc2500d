"""The raw in-process HSM signing rate: the limit every other figure is measured against.

"raw" is python-pkcs11's ``sign`` on a key handle, under the process-wide PKCS#11 lock, one
thread, one process: what the HSM gives with nothing of ours around it. "key store" is the same
signature through HsmKeyStore.sign_digest (lookup cache, digest checks, DER encoding).

"raw on every core" is the raw RSA-2048 rate of one process per CPU signing at once: what the
machine's cores deliver together at that moment. A load that uses every core (the server's
workers and the load's clients) is bounded by it, and on a virtual machine it moves on its own:
two CPU-bound processes ran 1.38 to 2.04 times as fast as one on this machine class.

    python -m benchmarks.hsm_rate --every-core STATE SECONDS   (one such process)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
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


def raw_on_every_core(state: Path, seconds: float) -> Rate:
    """The raw RSA-2048 rate of one process per CPU signing at once, each with a PKCS#11 session
    and an RSA-2048 session key of its own (processes, not threads: see DESIGN.md on one lock
    per process), over one window of ``seconds`` opened once every process has logged in and signed once.

    Raises: RuntimeError: a process could not sign (it prints why).
    """
    command = [sys.executable, "-m", "benchmarks.hsm_rate", "--every-core", str(state), str(seconds)]
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    processes = [subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                 for _ in range(os.cpu_count() or 1)]
    for process in processes:
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("a signing process of raw_on_every_core did not start (its error is above)")
    start_at = time.time() + 0.1
    for process in processes:  # every process is told before any is waited for
        process.stdin.write(f"{start_at}\n")
        process.stdin.close()
    counts = [int(process.stdout.read().split()[-1]) for process in processes]
    for process in processes:
        process.wait(timeout=120)
    return Rate("raw rsa-2048 on every core", sum(counts), seconds)


def _sign_in_window(state: Path, seconds: float) -> int:
    """One process of :func:`raw_on_every_core`: says "ready" once it can sign, reads the window's
    start (a time.time()) on standard input, and returns its signatures in the window."""
    from signserver.config import load_config

    config = load_config(environ={"SIGNSERVER_STATE_DIR": str(state)})
    service = SignService.from_config(config, user_pin=config.hsm.user_pin(environ={}))
    try:
        # A session key of its own: signing with one token object from several processes would
        # measure SoftHSM's file locks on that object, not the cores (the workers' holder keys
        # are session objects too).
        scheme = SignatureAlgorithm.RSA_PKCS1V15_SHA256
        mechanism, parameter = scheme.mechanism()
        token_input = scheme.token_input(hashlib.sha256(b"core").digest())
        _, key = service.keys.session.run(
            lambda s: s.generate_keypair(pkcs11.KeyType.RSA, 2048, store=False), "generate a session key")

        def sign() -> bytes:
            with pkcs11_lock():
                return key.sign(token_input, mechanism=mechanism, mechanism_param=parameter)
        sign()
        print("ready", flush=True)
        start_at = float(sys.stdin.readline())
        time.sleep(max(0.0, start_at - time.time()))
        done, deadline = 0, start_at + seconds
        while time.time() < deadline:
            sign()
            done += 1
        return done
    finally:
        service.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hsm_rate")
    parser.add_argument("--every-core", nargs=2, metavar=("STATE", "SECONDS"), required=True)
    state_dir, window = parser.parse_args().every_core
    print(_sign_in_window(Path(state_dir), float(window)))
