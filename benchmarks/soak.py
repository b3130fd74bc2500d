"""Soak test (not part of CI): mixed load against `signserver serve` for a while, sampling each
worker's resident memory and open file descriptors, and reporting whether they stay flat.

Each worker keeps one PKCS#11 session for its life and logs every time it must open it again;
SoftHSM does not report how many sessions are open, so the soak counts those reopenings in the
server's log. Descriptors are split into sockets, which follow the clients' connections;
database connections, which the pool opens up to its bound as load peaks; documents being
signed; and the other files, which must not grow.

    python -m benchmarks.soak [--minutes 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import load
from benchmarks.grpc_signing import PASSWORD, ServerProcess
from benchmarks.harness import RESULTS, fresh_state_dir, markdown_table
from signserver.accounts.manager import Enrolment
from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
from signserver.config import load_config
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.pades.sample import sample_pdf
from signserver.secret import Secret
from signserver.service import SignService
from signserver.store.database import POOL_OVERFLOW, POOL_SIZE
from signserver.v1 import document_pb2, document_pb2_grpc


WARM_UP_SECONDS = 15.0


@dataclass(frozen=True)
class Sample:
    rss_mb: float
    sockets: int
    database_connections: int  # each holds the database file open
    other_files: int  # descriptors but sockets, database files and documents being signed


def sample(pid: int) -> Sample:
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:  # closed meanwhile
            pass
    sockets = sum(t.startswith("socket:") for t in targets)
    database = sum(t.endswith(".db") for t in targets)
    # Spooled documents are unlinked as they are created: they show as "(deleted)" while signed.
    transient = sum(t.endswith((".db-wal", ".db-shm", "(deleted)")) for t in targets)
    return Sample(rss, sockets, database, len(targets) - sockets - database - transient)


def verdict_row(name: str, series: list[Sample]) -> list[str]:
    """Flat when the mean memory of the last third is within 10 % of the first third's, the
    fewest other files open in the last third are no more than in the first (files open for a
    moment, by the background thread say, show at some samples; a leak raises every sample
    after it, the fewest included), and the database connections stay within the pool's bound."""
    third = max(1, len(series) // 3)
    first, last = series[:third], series[-third:]
    first_rss, last_rss = (sum(s.rss_mb for s in part) / len(part) for part in (first, last))
    first_files, last_files = (_span([s.other_files for s in part]) for part in (first, last))
    first_sockets, last_sockets = (_span([s.sockets for s in part]) for part in (first, last))
    connections = max(s.database_connections for s in series)
    flat = (last_rss <= first_rss * 1.10 and last_files[0] <= first_files[0]
            and connections <= POOL_SIZE + POOL_OVERFLOW)
    return [name, f"{first_rss:.0f} -> {last_rss:.0f} MB", f"{_text(first_files)} -> {_text(last_files)}",
            f"{_text(first_sockets)} -> {_text(last_sockets)}", f"{connections}", "flat" if flat else "GROWING"]


def _span(counts: list[int]) -> tuple[int, int]:
    return min(counts), max(counts)


def _text(span: tuple[int, int]) -> str:
    return f"{span[0]}" if span[0] == span[1] else f"{span[0]}-{span[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak")
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    state = fresh_state_dir()
    config = load_config(environ={"SIGNSERVER_STATE_DIR": str(state)})
    service = SignService.from_config(config, user_pin=config.hsm.user_pin(environ={}))
    service.prepare_database()
    created = service.accounts.create(
        Enrolment("soak-holder", "翁心 Soak Holder", ("soak@example.mo",), kind=AccountKind.CORPORATE,
                  organisation="Soak Lda", key_algorithm=KeyAlgorithm.RSA_2048), Secret(PASSWORD), "soak")
    service.applications.create("bench-app", otp_required=False)
    server = ServerProcess(state, service)
    service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "soak")
    target = load.Target(f"localhost:{server.port}", server.pem, created.account.username, PASSWORD,
                         created.credential.id, server.workers)
    workers = [int(p) for p in Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()]
    samples: list[tuple[float, list[Sample]]] = []
    signatures = 0

    def documents() -> None:
        with server.channel() as channel:
            stub = document_pb2_grpc.DocumentServiceStub(channel)
            pdf = sample_pdf(5)
            while True:
                def requests():
                    yield document_pb2.SignPdfRequest(header=document_pb2.SignPdfHeader(
                        account=created.account.username, password=PASSWORD, credential_id=created.credential.id))
                    yield document_pb2.SignPdfRequest(chunk=pdf)
                for _ in stub.SignPdf(requests(), timeout=120):
                    pass

    # A process of its own, forked before this one uses gRPC: gRPC objects must not cross a fork.
    pdf_process = load._fork.Process(target=documents, daemon=True)
    pdf_process.start()
    try:
        # Warm-up, not sampled: the database pool, caches and fonts reach their working size.
        for batch in (1, 10):
            load.run_load("warm-up", target, load.hash_signer(batch), 8, WARM_UP_SECONDS)
        deadline = time.monotonic() + args.minutes * 60
        while time.monotonic() < deadline:
            batch = 1 if len(samples) % 2 else 10  # single digests run on the event loop, batches in the pool
            result = load.run_load("soak", target, load.hash_signer(batch), 8,
                                   min(20.0, max(1.0, deadline - time.monotonic())))
            signatures += result.operations
            samples.append((time.monotonic(), [sample(pid) for pid in workers]))
    finally:
        pdf_process.terminate()
        pdf_process.join(60)
        server.stop()
        service.close()
        reopened = (state / "server.log").read_text().count("HSM session lost")
        shutil.rmtree(state, ignore_errors=True)

    rows = [verdict_row(f"worker {index} (pid {pid})", [s[1][index] for s in samples])
            for index, pid in enumerate(workers)]
    print(f"{args.minutes:g} minutes, {len(samples)} samples per worker, {signatures:,} signatures by SignHash")
    print(markdown_table(["process", "resident memory (first third -> last third, mean)",
                          "other files open (fewest-most)", "sockets open (fewest-most)",
                          f"database connections (most; pool bound {POOL_SIZE + POOL_OVERFLOW})", "verdict"], rows))
    print(f"HSM sessions opened again after a loss: {reopened}")
    RESULTS.mkdir(exist_ok=True)
    written = RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    written.write_text(json.dumps({
        "minutes": args.minutes, "signatures": signatures, "hsm_sessions_reopened": reopened,
        "workers": {str(pid): [{"seconds": round(at - samples[0][0], 1), **asdict(s[index])} for at, s in samples]
                    for index, pid in enumerate(workers)},
    }, indent=1))
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
