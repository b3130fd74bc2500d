"""Soak test (not part of CI): mixed load against `signserver serve` for a while, sampling each
worker's resident memory and open file descriptors (PKCS#11 sessions, database connections and
sockets all show there), and reporting whether they stay flat.

    python -m benchmarks.soak [--minutes 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from benchmarks import load
from benchmarks.grpc_signing import PASSWORD, ServerProcess
from benchmarks.harness import fresh_state_dir, markdown_table
from signserver.accounts.manager import Enrolment
from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
from signserver.config import load_config
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.pades.sample import sample_pdf
from signserver.secret import Secret
from signserver.service import SignService
from signserver.v1 import document_pb2, document_pb2_grpc


def sample(pid: int) -> tuple[float, int]:
    rss = next(int(line.split()[1]) / 1024 for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


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
                         created.credential.id)
    workers = [int(p) for p in Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()]
    samples: list[tuple[float, list[tuple[float, int]]]] = []
    deadline = time.monotonic() + args.minutes * 60

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
        while time.monotonic() < deadline:
            load.run_load("soak", target, load.hash_signer(10), 8, min(20.0, max(1.0, deadline - time.monotonic())))
            samples.append((time.monotonic(), [sample(pid) for pid in workers]))
    finally:
        pdf_process.terminate()
        pdf_process.join(60)
        server.stop()
        service.close()
        shutil.rmtree(state, ignore_errors=True)

    rows = []
    for index, pid in enumerate(workers):
        series = [s[1][index] for s in samples]
        third = max(1, len(series) // 3)
        first_rss = sum(r for r, _ in series[:third]) / third
        last_rss = sum(r for r, _ in series[-third:]) / third
        first_fds, last_fds = series[0][1], series[-1][1]
        flat = last_rss <= first_rss * 1.10 and last_fds <= first_fds + 2
        rows.append([f"worker {index} (pid {pid})", f"{first_rss:.0f} -> {last_rss:.0f} MB",
                     f"{first_fds} -> {last_fds}", "flat" if flat else "GROWING"])
    print(markdown_table(["process", "resident memory (first third -> last third)", "open descriptors", "verdict"],
                         rows))


if __name__ == "__main__":
    main()
