"""Authorize and SignHash over gRPC, against a `signserver serve` process of its own.

The server runs as a separate process, as in production, on the benchmark's token and database.
Authorize is measured for an application that does not require an OTP (a TOTP code is accepted
once per 30-second step, so a loop of OTP logins would measure the clock, not the server): it is
password (argon2id) + database + token issue. SignHash is measured by the load generator
(benchmarks/load.py) at 1, 10 and 50 digests per call, each caller spending digests of a token it
was given before the window opened, and at 1 and 50 digests per call from the native client as
well (benchmarks/native_load.py), which leaves the server more of the machine's CPU; then SignPdf
and a 100 MB document on the same server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import grpc
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from benchmarks import csc_signing, load, native_load, pdf_signing
from benchmarks.harness import Rate
from signserver.accounts import argon2_memory
from signserver.accounts.applications import certificate_fingerprint
from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
from signserver.accounts.manager import Enrolment
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.secret import Secret
from signserver.service import SignService

PASSWORD = "Bench-pass-2026"


class ServerProcess:
    """`signserver serve` on a free loopback port, for the benchmark's state directory."""

    def __init__(self, state: Path, service: SignService, environ: Mapping[str, str] | None = None,
                 command: Sequence[str] | None = None):
        """``environ``: settings beyond these (a database URL, another directory's token);
        ``command``: what runs instead of `signserver serve`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER")}
        env.update(SIGNSERVER_STATE_DIR=str(state), SIGNSERVER_SERVER_LISTEN="127.0.0.1:0",
                   SIGNSERVER_HTTP_LISTEN="127.0.0.1:0", SIGNSERVER_CSC_LISTEN="127.0.0.1:0",
                   SIGNSERVER_AUTHORIZATION_MAX_SIGNATURES=str(load.TOKEN_DIGESTS), **(environ or {}))
        self.log = open(state / "server.log", "w+")  # a file, not a pipe: the server never blocks on it
        self.process = subprocess.Popen(list(command or [str(Path(sys.executable).parent / "signserver"), "serve"]),
                                        env=env, stderr=self.log, text=True)
        # Every worker must be serving before the first connection: a connection made while only
        # one listens stays with that one for good.
        self.workers = workers = os.cpu_count() or 1  # serve's default
        deadline = time.monotonic() + 60
        self.port = None
        while self.port is None and time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the server did not start: " + (state / "server.log").read_text()[-2000:])
            serving = re.findall(r"worker (\d+) \(pid \d+\) serving on 127\.0\.0\.1:(\d+)",
                                 (state / "server.log").read_text())
            if len({index for index, _ in serving}) == workers:
                self.port = int(serving[0][1])
            time.sleep(0.1)
        if self.port is None:
            self.stop()
            raise RuntimeError(f"the server's {workers} workers did not all start within 60 s")
        fronts = re.findall(r"CSC API on (https://[^/\s]+)/csc/v2/", (state / "server.log").read_text())
        self.csc_url = fronts[0].replace("127.0.0.1", "localhost") if fronts else None
        # Mutual TLS, as on the defaults: a client certificate for the benchmark's application.
        key = ec.generate_private_key(ec.SECP256R1())
        issued = service.ca.issue_service_certificate("client-asp", "bench-app", key.public_key(), "benchmark")
        service.applications.set_client_certificate("bench-app", certificate_fingerprint(issued.certificate))
        self.pem = (b"".join(c.public_bytes(Encoding.PEM) for c in service.ca.chain()),
                    key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
                    issued.certificate.public_bytes(Encoding.PEM))
        self.credentials = grpc.ssl_channel_credentials(*self.pem)

    def channel(self) -> grpc.Channel:
        return grpc.secure_channel(f"localhost:{self.port}", self.credentials)

    def worker_rss_mb(self) -> list[float]:
        """Resident memory of each worker process now (the server's children)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        sizes = []
        for pid in children:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        return sizes

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def served_holder(service: SignService, state: Path, holder_name: str = "Bench Holder",
                  **server_options) -> tuple[ServerProcess, load.Target]:
    """An RSA-2048 holder with a certificate, the application "bench-app", and `signserver serve`
    (``server_options``: ServerProcess's) for them; the caller stops the server."""
    created = service.accounts.create(
        Enrolment("bench-holder", holder_name, ("bench@example.mo",), kind=AccountKind.CORPORATE,
                  organisation="Bench Lda", key_algorithm=KeyAlgorithm.RSA_2048),
        Secret(PASSWORD), operator="benchmark")
    service.applications.create("bench-app", otp_required=False)  # its certificate comes with the server
    server = ServerProcess(state, service, **server_options)
    try:
        service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "benchmark")
    except BaseException:
        server.stop()
        raise
    return server, load.Target(f"localhost:{server.port}", server.pem, created.account.username, PASSWORD,
                               created.credential.id, server.workers)


def run(service: SignService, state: Path, seconds: float, raw_probe: Callable[[], Rate] | None = None,
        every_core_probe: Callable[[], Rate] | None = None) -> tuple[list, list, list, tuple]:
    """Authorize and SignHash figures under load, CSC beside gRPC, SignPdf latencies, and the
    100 MB document, against one `signserver serve` (one worker per CPU). With ``raw_probe``,
    each Authorize and SignHash figure keeps the raw rate measured just before and just after it
    (``LoadResult.raw_around``); with ``every_core_probe``, the SignHash figures at concurrency 8
    keep the raw rate on every core at once too (``LoadResult.every_core_around``)."""
    server, target = served_holder(service, state, "翁心 Bench Holder")

    def bracketed(name: str, caller: load.Caller, concurrency: int, every_core: bool = False) -> load.LoadResult:
        return around(lambda _: load.run_load(name, target, caller, concurrency, seconds), every_core)

    def around(measure: Callable[[float | None], load.LoadResult], every_core: bool = False) -> load.LoadResult:
        """``measure(the raw rate just before)``, with the raw rate measured just before and just
        after (and, ``every_core``, the raw rate on every core at once, before and after that)."""
        probe_every_core = every_core_probe if every_core else None
        cores_before = probe_every_core() if probe_every_core else None
        before = raw_probe() if raw_probe else None
        result = measure(before.per_second if before else None)
        if before is not None:
            result.raw_around = (before.per_second + raw_probe().per_second) / 2
        if cores_before is not None:
            result.every_core_around = (cores_before.per_second + probe_every_core().per_second) / 2
        return result

    def from_native_client(batch: int, concurrency: int) -> load.LoadResult:
        # Requests for three times the raw rate: more than the workers can sign.
        return around(lambda raw: native_load.sign_hash_load(
            f"SignHash, {batch} digest(s)/call, concurrency {concurrency}, native client", target, batch,
            concurrency, seconds, most_per_second=3 * (raw or 2000) / batch), every_core=True)

    try:
        figures = [bracketed("Authorize (no OTP), concurrency 8", load.authorizer, 8)]
        for batch in (1, 10, 50):
            for concurrency in (1, 8, 32):
                figures.append(bracketed(f"SignHash, {batch} digest(s)/call, concurrency {concurrency}",
                                         load.hash_signer(batch), concurrency, every_core=concurrency == 8))
            if batch in (1, 50):  # the targets' figures, from a client that leaves the server more CPU
                figures.append(from_native_client(batch, 8))
        csc = csc_signing.run(target, server.csc_url, seconds)
        documents = pdf_signing.sign_pdf_rates(target, seconds)
        with server.channel() as channel:
            large = pdf_signing.large_document_memory(channel, target.account, PASSWORD, target.credential,
                                                      server.process.pid)
        # At rest: a worker keeps the work memory of its password checks (19 MiB each) while they
        # keep coming, and returns it IDLE_SECONDS after the last (signserver/accounts/argon2_memory.py).
        time.sleep(argon2_memory.IDLE_SECONDS + 1)
        workers = server.worker_rss_mb()
        return figures, csc, documents, (*large, workers)
    finally:
        server.stop()
