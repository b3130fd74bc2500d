"""CPU per call of each piece of a single-digest SignHash, in one process, one thread.

    python -m benchmarks.components [--calls 3000]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import pstats
import shutil
import statistics
import time

from benchmarks.grpc_signing import PASSWORD
from benchmarks.harness import fresh_state_dir
from signserver.accounts.manager import Enrolment
from signserver.accounts.model import AccountKind
from signserver.audit.log import canonical_detail, record_hash
from signserver.ca.authority import CertificateRequest
from signserver.config import load_config
from signserver.hsm.algorithms import HashAlgorithm, KeyAlgorithm, SignatureAlgorithm
from signserver.secret import Secret
from signserver.service import SignService


def cpu_us(label, fn, n, repeats=5):
    results = []
    for _ in range(repeats):
        start = time.thread_time()
        for i in range(n):
            fn(i)
        results.append((time.thread_time() - start) / n * 1e6)
    print(f"{label:55s} {statistics.median(results):8.1f} us  (min {min(results):.1f})", flush=True)
    return statistics.median(results)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    n = args.calls
    state = fresh_state_dir()
    config = load_config(environ={"SIGNSERVER_STATE_DIR": str(state),
                                  "SIGNSERVER_AUTHORIZATION_MAX_SIGNATURES": "10000"})
    service = SignService.from_config(config, user_pin=config.hsm.user_pin(environ={}))
    try:
        service.prepare_database()
        created = service.accounts.create(
            Enrolment("bench-holder", "Bench Holder", ("bench@example.mo",), kind=AccountKind.CORPORATE,
                      organisation="Bench Lda", key_algorithm=KeyAlgorithm.RSA_2048),
            Secret(PASSWORD), operator="benchmark")
        service.applications.create("bench-app", otp_required=False)
        service.ca.initialise("benchmark")
        service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "benchmark")
        app, _key = service.applications.create("bench-app2", otp_required=False)
        cred = created.credential.id
        alg = SignatureAlgorithm.RSA_PKCS1V15_SHA256
        signer = service.signer
        service.credentials.credential(app, cred)  # usable, or the run stops here
        # Every timed call spends a digest of its own: enough tokens for every call of the two
        # stages that spend (cpu_us repeats each five times), authorised before any timing.
        per_token = config.authorization.max_signatures
        spendable = []
        for first in range(0, 2 * 5 * n, per_token):
            digests = [hashlib.sha256(f"d{first + i}".encode()).digest() for i in range(per_token)]
            issued = signer.authorize(app, "bench-holder", Secret(PASSWORD), None, cred,
                                      HashAlgorithm.SHA256, digests)
            spendable += [(Secret(issued.token), digest) for digest in digests]
        cursor = iter(spendable)
        from signserver.store.schema import audit_head
        from sqlalchemy import select as sel
        now = service.clock.now()

        def full(_):
            token, digest = next(cursor)
            signer.sign_hashes(app, cred, token, alg, [digest])

        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            for i in range(n):
                full(i)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(40)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(60)
            return
        cpu_us("sign_hashes (whole service call)", full, n)
        if os.environ.get("ONLY_FULL"):
            return

        def spend(_):
            token, digest = next(cursor)
            with service.database.transaction() as conn:
                signer._spend_in(conn, app, cred, token, HashAlgorithm.SHA256, [digest], None, now)
        cpu_us("spend (credential, digest, token count; 1 txn)", spend, n)

        def audit(_):
            with service.database.transaction() as conn:
                service.audit.append_many(conn, now, "signature", "application:bench-app", "bench-holder",
                                          [{"credential": cred, "digest": hashlib.sha256(b"d").hexdigest(), "algorithm": alg.value}])
        cpu_us("audit append (own transaction)", audit, n)

        def empty_write(_):
            with service.database.transaction() as conn:
                pass
        cpu_us("empty write transaction (flock+BEGIN IMMEDIATE+COMMIT)", empty_write, n)

        def empty_write_nolock(_):
            with service.database._begun(writing=True) as conn:
                pass
        cpu_us("  same without the flock", empty_write_nolock, n)

        def read_txn(_):
            with service.database.read() as conn:
                pass
        cpu_us("empty read transaction", read_txn, n)

        def head(_):
            with service.database.read() as conn:
                conn.execute(sel(audit_head.c.seq).where(audit_head.c.id == 1)).one()
        cpu_us("read txn + 1 small SELECT", head, n)
        cpu_us("audit canonical JSON + hash only", lambda i: record_hash(
            "0" * 64, i, 1, "signature", "application:bench-app", "bench-holder",
            canonical_detail({"credential": cred, "digest": hashlib.sha256(b"d").hexdigest(), "algorithm": alg.value})), n)
        import logging
        cpu_us("logging.debug call (disabled)", lambda i: logging.getLogger("x").debug("x %s", i), n)
    finally:
        service.close()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
