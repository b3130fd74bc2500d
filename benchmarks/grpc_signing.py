"""Authorize and SignHash over gRPC, against a `signserver serve` process of its own.

The server runs as a separate process, as in production, on the benchmark's token and database.
Authorize is measured for an application that does not require an OTP (a TOTP code is accepted
once per 30-second step, so a loop of OTP logins would measure the clock, not the server): it is
password (argon2id) + database + token issue. SignHash is measured with one digest per call and
with batches of 50, each call spending digests of tokens authorised before the timed loop.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from benchmarks import pdf_signing
from benchmarks.harness import Rate, measure
from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
from signserver.accounts.manager import Enrolment
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.secret import Secret
from signserver.service import SignService
from signserver.v1 import signing_pb2, signing_pb2_grpc

PASSWORD = "Bench-pass-2026"
TOKEN_DIGESTS = 5000


class ServerProcess:
    """`signserver serve` on a free loopback port, for the benchmark's state directory."""

    def __init__(self, state: Path, service: SignService):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER")}
        env.update(SIGNSERVER_STATE_DIR=str(state), SIGNSERVER_SERVER_LISTEN="127.0.0.1:0",
                   SIGNSERVER_HTTP_LISTEN="127.0.0.1:0", SIGNSERVER_AUTHORIZATION_MAX_SIGNATURES=str(TOKEN_DIGESTS))
        self.log = open(state / "server.log", "w+")  # a file, not a pipe: the server never blocks on it
        self.process = subprocess.Popen([str(Path(sys.executable).parent / "signserver"), "serve"], env=env,
                                        stderr=self.log, text=True)
        deadline = time.monotonic() + 60
        self.port = None
        while self.port is None and time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the server did not start: " + (state / "server.log").read_text()[-2000:])
            match = re.search(r"serving on 127\.0\.0\.1:(\d+)", (state / "server.log").read_text())
            self.port = int(match.group(1)) if match else None
            time.sleep(0.1)
        # Mutual TLS, as on the defaults: a client certificate for the benchmark's application.
        key = ec.generate_private_key(ec.SECP256R1())
        issued = service.ca.issue_service_certificate("client-asp", "bench-app", key.public_key(), "benchmark")
        service.applications.set_client_certificate(
            "bench-app", hashlib.sha256(issued.certificate.public_bytes(Encoding.DER)).hexdigest())
        self.credentials = grpc.ssl_channel_credentials(
            b"".join(c.public_bytes(Encoding.PEM) for c in service.ca.chain()),
            private_key=key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
            certificate_chain=issued.certificate.public_bytes(Encoding.PEM))

    def channel(self) -> grpc.Channel:
        return grpc.secure_channel(f"localhost:{self.port}", self.credentials)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def run(service: SignService, state: Path, seconds: float) -> tuple[list[Rate], list, tuple]:
    """SignHash and Authorize figures, and SignPdf latencies, against one server process."""
    created = service.accounts.create(
        Enrolment("bench-holder", "翁心 Bench Holder", ("bench@example.mo",), kind=AccountKind.CORPORATE,
                  organisation="Bench Lda", key_algorithm=KeyAlgorithm.RSA_2048),
        Secret(PASSWORD), operator="benchmark")
    service.applications.create("bench-app", otp_required=False)  # its certificate comes with the server
    server = ServerProcess(state, service)
    try:
        service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "benchmark")
        with server.channel() as channel:
            rates = _measure(signing_pb2_grpc.SigningServiceStub(channel), [],
                             created.account.username, created.credential.id, seconds)
            documents = pdf_signing.sign_pdf_rates(channel, created.account.username, PASSWORD,
                                                   created.credential.id, seconds)
            large = pdf_signing.large_document_memory(channel, created.account.username, PASSWORD,
                                                      created.credential.id, server.process.pid)
        return rates, documents, large
    finally:
        server.stop()


def _measure(stub, metadata, account: str, credential: str, seconds: float) -> list[Rate]:
    counter = iter(range(10**9))

    def fresh_digests(n: int) -> list[bytes]:
        return [hashlib.sha256(str(next(counter)).encode()).digest() for _ in range(n)]

    def authorize(digests: list[bytes]) -> str:
        return stub.Authorize(signing_pb2.AuthorizeRequest(
            account=account, password=PASSWORD, credential_id=credential,
            hash_algorithm=signing_pb2.HASH_ALGORITHM_SHA256, digests=digests), metadata=metadata).activation_token

    rates = [measure("Authorize (no OTP), 1 client", lambda: authorize(fresh_digests(1)), seconds, warmup=3)]

    for batch in (1, 50):
        rates.append(_sign_rate(stub, metadata, credential, batch, seconds, fresh_digests, authorize))
    return rates


def _sign_rate(stub, metadata, credential: str, batch: int, seconds: float, fresh_digests, authorize) -> Rate:
    """Signatures per second over SignHash; authorising tokens is done ahead, outside the timing."""
    def tokens():
        while True:
            digests = fresh_digests(TOKEN_DIGESTS)
            token = authorize(digests)
            for start in range(0, TOKEN_DIGESTS - batch + 1, batch):
                yield token, digests[start:start + batch]

    supply = tokens()
    ready = [next(supply) for _ in range(3)]
    signed, busy = 0, 0.0
    while busy < seconds:
        if not ready:
            ready = [next(supply) for _ in range(TOKEN_DIGESTS // batch)]  # untimed
        token, chunk = ready.pop(0)
        start = time.perf_counter()
        stub.SignHash(signing_pb2.SignHashRequest(credential_id=credential, activation_token=token,
                                                  signature_algorithm="rsa-pkcs1v15-sha256", digests=chunk),
                      metadata=metadata)
        busy += time.perf_counter() - start
        signed += len(chunk)
    return Rate(f"SignHash over gRPC, {batch} digest(s)/call, 1 client", signed, busy)
