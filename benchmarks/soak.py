"""Soak test (not part of CI): mixed load against `signserver serve` for a while, sampling each
worker's resident memory and open file descriptors, and reporting whether they stay flat.

The figures come from the server's Prometheus endpoint (``[metrics] listen``), as an operator
would watch them: the live workers and each one's resident memory and open descriptors
(``process_resident_memory_bytes`` and ``process_open_fds`` by ``worker`` and ``pid``), the HSM
sessions opened again after a loss (``signserver_hsm_session_reopenings_total``: each worker keeps
one PKCS#11 session for its life; SoftHSM does not report how many are open) and the calls
answered (``signserver_calls_total``). No metric says what a descriptor is, so /proc/PID/fd alone
splits them into sockets, which follow the clients' connections; database connections, which the
pool opens up to its bound as load peaks; documents being signed; and the other files, which must
not grow.

    python -m benchmarks.soak [--minutes 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import time
import urllib.request
from dataclasses import asdict, dataclass

from prometheus_client.parser import text_string_to_metric_families

from benchmarks import load
from benchmarks.grpc_signing import PASSWORD, ServerProcess
from benchmarks.harness import RESULTS, fresh_state_dir, markdown_table
from signserver.accounts.manager import Enrolment
from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
from signserver.config import DatabaseConfig, load_config
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.pades.sample import sample_pdf
from signserver.secret import Secret
from signserver.service import SignService
from signserver.v1 import document_pb2, document_pb2_grpc

# The server runs on the default [database] pool: a worker holds at most this many connections.
POOL_BOUND = DatabaseConfig.pool_size + DatabaseConfig.max_overflow


WARM_UP_SECONDS = 15.0


@dataclass(frozen=True)
class Sample:
    rss_mb: float  # process_resident_memory_bytes
    open_files: int  # process_open_fds: every descriptor
    sockets: int
    database_connections: int  # each holds the database file open
    other_files: int  # descriptors but sockets, database files and documents being signed


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of one scrape of ``url``, by name and sorted labels."""
    with urllib.request.urlopen(url, timeout=30) as answer:
        text = answer.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def worker_figures(samples: dict[tuple[str, tuple], float], name: str) -> dict[int, float]:
    """A process figure of every live worker, by pid."""
    return {int(dict(labels)["pid"]): value for (sample, labels), value in samples.items() if sample == name}


def total(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(value for (sample, found), value in samples.items()
               if sample == name and labels.items() <= dict(found).items())


def sample(pid: int, samples: dict[tuple[str, tuple], float]) -> Sample:
    """The worker ``pid``'s figures: memory and descriptors from the scrape, what the descriptors
    are from /proc (no metric says)."""
    rss = worker_figures(samples, "process_resident_memory_bytes")[pid] / (1024 * 1024)
    open_files = int(worker_figures(samples, "process_open_fds")[pid])
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
    return Sample(rss, open_files, sockets, database, len(targets) - sockets - database - transient)


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
            and connections <= POOL_BOUND)
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
    with socket.socket() as probe:  # a free port for the metrics endpoint
        probe.bind(("127.0.0.1", 0))
        metrics_url = f"http://127.0.0.1:{probe.getsockname()[1]}/metrics"
    server = ServerProcess(state, service, environ={"SIGNSERVER_METRICS_LISTEN": metrics_url.split("/")[2]})
    service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "soak")
    target = load.Target(f"localhost:{server.port}", server.pem, created.account.username, PASSWORD,
                         created.credential.id, server.workers)
    # The live workers, as the metrics name them (the supervisor's children include the metrics
    # process): their pids in the order of their indexes.
    indexes = {int(dict(labels)["pid"]): dict(labels)["worker"]
               for (name, labels) in scrape(metrics_url) if name == "signserver_worker"}
    workers = sorted(indexes, key=lambda pid: int(indexes[pid]))
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
            scraped = scrape(metrics_url)
            samples.append((time.monotonic(), [sample(pid, scraped) for pid in workers]))
        final = scrape(metrics_url)
    finally:
        pdf_process.terminate()
        pdf_process.join(60)
        server.stop()
        service.close()
        shutil.rmtree(state, ignore_errors=True)
    reopened = int(total(final, "signserver_hsm_session_reopenings_total"))
    answered = {method: int(total(final, "signserver_calls_total", front="grpc", method=method, status="OK"))
                for method in ("SigningService/SignHash", "SigningService/Authorize", "DocumentService/SignPdf")}
    failed = int(total(final, "signserver_calls_total", front="grpc")
                 - total(final, "signserver_calls_total", front="grpc", status="OK"))

    rows = [verdict_row(f"worker {indexes[pid]} (pid {pid})", [s[1][position] for s in samples])
            for position, pid in enumerate(workers)]
    print(f"{args.minutes:g} minutes, {len(samples)} samples per worker, {signatures:,} signatures by SignHash")
    print(markdown_table(["process", "resident memory (first third -> last third, mean)",
                          "other files open (fewest-most)", "sockets open (fewest-most)",
                          f"database connections (most; pool bound {POOL_BOUND})", "verdict"], rows))
    print("calls answered OK (the server's count, warm-up included): "
          + ", ".join(f"{method} {count:,}" for method, count in answered.items()) + f"; not OK: {failed:,}")
    print(f"HSM sessions opened again after a loss: {reopened}")
    RESULTS.mkdir(exist_ok=True)
    written = RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    written.write_text(json.dumps({
        "minutes": args.minutes, "signatures": signatures, "hsm_sessions_reopened": reopened,
        "calls_ok": answered, "calls_not_ok": failed,
        "workers": {str(pid): [{"seconds": round(at - samples[0][0], 1), **asdict(s[index])} for at, s in samples]
                    for index, pid in enumerate(workers)},
    }, indent=1))
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
