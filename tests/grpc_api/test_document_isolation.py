"""Expensive document work cannot starve signing: verifications run in niced child processes,
bounded per worker and per application and killed at their deadline, and SignHash stays fast
while clients verify worst-case documents."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import io
import os
import re
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from multiprocessing import forkserver
from pathlib import Path

import grpc
import pytest
from asn1crypto import keys as asn1_keys, x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers

from signserver.errors import InvalidArgument, ServerBusy
from signserver.pades.sample import sample_pdf
from signserver.pades.verification import TrustMaterial, VerificationLimits
from signserver.pades.verifier_process import (MEMORY_LIMIT_BYTES, VerifierProcesses, refusal_past_deadline,
                                               start_forkserver)
from signserver.v1 import document_pb2, document_pb2_grpc, signing_pb2, signing_pb2_grpc
from tests.conftest import PASSWORD, enrol, service_with_ca
from tests.grpc_api.conftest import ServerThread

SAMPLES = 300
P99_LIMIT_SECONDS = 0.020
VERIFYING_CLIENTS = 4
# Other work on a shared machine can stall any process for some milliseconds now and then: a try
# whose p99 such a burst spoiled is made again. Verification starving signing fails every try.
ATTEMPTS = 3


def software_signer() -> signers.SimpleSigner:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Many Signatures")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    der_key = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return signers.SimpleSigner(
        signing_cert=asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER)),
        signing_key=asn1_keys.PrivateKeyInfo.load(der_key), cert_registry=None)


@pytest.fixture(scope="module")
def worst_case_pdf() -> bytes:
    """As many signatures, one revision each, as verification takes: the work of each
    signature's difference analysis grows with the revisions after it."""
    signer = software_signer()
    data = sample_pdf(1)
    for index in range(min(VerificationLimits().max_signatures, 100)):
        out = io.BytesIO()
        signers.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(data), strict=False),
                         signers.PdfSignatureMetadata(field_name=f"Signature{index}"), signer=signer, output=out)
        data = out.getvalue()
    return data


def verifier_children() -> int:
    """Processes the forkserver of this process has running (verifications under way)."""
    parent = forkserver._forkserver._forkserver_pid
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                count += 1
    return count


def verify_request(document: bytes):
    chunk = 1 << 20
    return iter([document_pb2.VerifyPdfRequest(chunk=document[i:i + chunk]) for i in range(0, len(document), chunk)])


@pytest.fixture
def world(config, tmp_path, clock):
    service = service_with_ca(config, tmp_path / "signserver.db", clock)  # verification trusts this CA
    with ServerThread(config, service) as server:
        yield service, server


def test_a_verification_past_its_deadline_is_killed(tmp_path, worst_case_pdf):
    start_forkserver()
    document = tmp_path / "many.pdf"
    document.write_bytes(worst_case_pdf)
    trust = TrustMaterial(roots=(), intermediates=(), crls=())
    began = time.monotonic()
    # Its 600 s of CPU not spent by the deadline: the server's want of time, not the document's fault.
    with pytest.raises(ServerBusy, match="not verified within 1 s"):
        asyncio.run(VerifierProcesses().verify(document, trust, VerificationLimits(max_seconds=600), 1.0))
    assert time.monotonic() - began < 10
    assert verifier_children() == 0  # killed, not left running
    assert list(tmp_path.iterdir()) == [document]  # no result file left behind


@pytest.fixture
def one_signature(tmp_path) -> Path:
    document = tmp_path / "one.pdf"
    out = io.BytesIO()
    signers.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(sample_pdf(1)), strict=False),
                     signers.PdfSignatureMetadata(field_name="Signature1"), signer=software_signer(), output=out)
    document.write_bytes(out.getvalue())
    return document


# Alone: a spinning process on every core for seconds would spoil the timings of the tests beside it.
@pytest.mark.alone
def test_a_document_is_judged_by_the_cpu_it_took_not_by_a_busy_machines_delay(one_signature):
    """Verifiers run in Linux's idle class: with every core busy, one gets no CPU at all. Its
    deadline then says that the server is busy (try again), not that the document asks too much."""
    start_forkserver()  # before the load: the forkserver imports at ordinary priority
    document = one_signature
    trust = TrustMaterial(roots=(), intermediates=(), crls=())
    assert asyncio.run(VerifierProcesses().verify(document, trust, VerificationLimits(), 60)).verdict is False
    busy = []
    try:
        # A spinning process held on each core: left to the kernel, two once shared one core, and the
        # verifier had the other whenever the tests beside it paused.
        for cpu in os.sched_getaffinity(0):
            busy.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
            os.sched_setaffinity(busy[-1].pid, {cpu})
        time.sleep(0.2)
        with pytest.raises(ServerBusy, match="not verified within 2 s") as refused:
            asyncio.run(VerifierProcesses().verify(document, trust, VerificationLimits(), 2.0))
        assert refused.value.retry_seconds == 2.0  # not sooner than another deadline's length
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert verifier_children() == 0


def test_a_document_over_its_cpu_limit_is_refused_for_it(one_signature):
    """The limit counts the verifier's CPU: spent, the document is refused for what it asks,
    however long the machine made it wait."""
    start_forkserver()
    with pytest.raises(InvalidArgument, match="exceeds its limit of 0 s after 0 of the document's 1 signatures"):
        asyncio.run(VerifierProcesses().verify(one_signature, TrustMaterial(roots=(), intermediates=(), crls=()),
                                               VerificationLimits(max_seconds=0), 60))


@pytest.mark.parametrize("cpu_seconds, refusal", [(19.9, ServerBusy), (20.0, InvalidArgument), (24.5, InvalidArgument),
                                                  (None, InvalidArgument)])
def test_a_verification_killed_at_its_deadline_is_judged_by_the_cpu_it_had(cpu_seconds, refusal):
    error = refusal_past_deadline(cpu_seconds, 25.0, VerificationLimits(max_seconds=20))
    assert type(error) is refusal
    assert "25 s" in str(error)
    assert getattr(error, "retry_seconds", 25.0) == 25.0


def compression_bomb(inflated_mib: int) -> bytes:
    """A PDF whose page tree sits in an object stream that inflates to ``inflated_mib`` MiB (each
    MiB partly random, so that the ratio stays under the parser's own bound on inflation)."""
    head, pages = b"2 0 ", b"<</Type/Pages/Kids[]/Count 0>>"
    deflate = zlib.compressobj(9)
    packed = deflate.compress(head + pages)
    for _ in range(inflated_mib):
        packed += deflate.compress(os.urandom(20_000) + b" " * ((1 << 20) - 20_000))
    packed += deflate.flush()
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    catalog = len(out)
    out += b"1 0 obj\n<</Type/Catalog/Pages 2 0 R>>\nendobj\n"
    object_stream = len(out)
    out += b"3 0 obj\n<</Type/ObjStm/N 1/First %d/Filter/FlateDecode/Length %d>>\nstream\n" % (len(head), len(packed))
    out += packed + b"\nendstream\nendobj\n"
    xref = len(out)
    rows = b"".join(struct.pack(">BIH", *row) for row in
                    [(0, 0, 65535), (1, catalog, 0), (2, 3, 0), (1, object_stream, 0), (1, xref, 0)])
    out += b"4 0 obj\n<</Type/XRef/Size 5/W[1 4 2]/Root 1 0 R/Length %d>>\nstream\n" % len(rows)
    out += rows + b"\nendstream\nendobj\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def test_a_verifier_child_cannot_allocate_beyond_its_memory_limit(tmp_path):
    start_forkserver()
    document = tmp_path / "bomb.pdf"
    document.write_bytes(compression_bomb(60))  # 2 MB that inflate to 60 MiB
    trust = TrustMaterial(roots=(), intermediates=(), crls=())

    def verify(memory_bytes: int):
        return asyncio.run(VerifierProcesses(memory_bytes=memory_bytes).verify(
            document, trust, VerificationLimits(), 60))

    with pytest.raises(InvalidArgument, match="verification needs more memory than 32 MiB"):
        verify(32 << 20)
    assert list(tmp_path.iterdir()) == [document]
    # Under the default limit the same document is inflated and read: a verdict (no signatures).
    assert verify(MEMORY_LIMIT_BYTES).verdict is False


def test_a_verification_cancelled_while_its_child_starts_leaves_no_child_behind(tmp_path, worst_case_pdf):
    start_forkserver()
    document = tmp_path / "many.pdf"
    document.write_bytes(worst_case_pdf)
    trust = TrustMaterial(roots=(), intermediates=(), crls=())

    async def cancel_while_starting() -> None:
        task = asyncio.create_task(VerifierProcesses().verify(document, trust, VerificationLimits(max_seconds=600), 600))
        await asyncio.sleep(0)  # the task now waits for the child's start, in a thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_while_starting())
    assert verifier_children() == 0  # killed once started, not left to verify for minutes
    time.sleep(1.0)
    assert verifier_children() == 0 and list(tmp_path.iterdir()) == [document]


def test_verifications_are_bounded_per_application(world, worst_case_pdf):
    service, server = world
    _, api_key = service.applications.create("verify-app", otp_required=False)
    metadata = [("x-api-key", api_key)]
    with server.channel() as channel:
        stub = document_pb2_grpc.DocumentServiceStub(channel)
        running = stub.VerifyPdf.future(verify_request(worst_case_pdf), metadata=metadata, timeout=120)
        deadline = time.monotonic() + 30
        while verifier_children() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(grpc.RpcError) as refused:
            stub.VerifyPdf(verify_request(sample_pdf(1)), metadata=metadata, timeout=30)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "verifications under way" in refused.value.details()
        running.cancel()
    deadline = time.monotonic() + 10  # the cancelled call's child is killed
    while verifier_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert verifier_children() == 0


@pytest.mark.alone
def test_sign_hash_p99_stays_under_20_ms_while_four_clients_verify_worst_case_documents(world, worst_case_pdf):
    service, server = world
    created, _ = enrol(service)
    credential = created.credential.id
    _, signing_key = service.applications.create("signing-app", otp_required=False)
    verifying_keys = [service.applications.create(f"verifying-app-{i}", otp_required=False)[1]
                      for i in range(VERIFYING_CLIENTS)]
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    counting = threading.Lock()

    def verify_in_a_loop(api_key: str) -> None:
        with server.channel() as channel:
            stub = document_pb2_grpc.DocumentServiceStub(channel)
            while not stop.is_set():
                call = stub.VerifyPdf.future(verify_request(worst_case_pdf), metadata=[("x-api-key", api_key)],
                                             timeout=300)
                while not call.done() and not stop.wait(0.05):
                    pass
                call.cancel()
                try:
                    call.result()
                    outcome = "OK"
                except grpc.FutureCancelledError:
                    outcome = "cancelled"
                except grpc.RpcError as error:
                    outcome = error.code().name
                    stop.wait(0.2)  # refused: ask again shortly, as a client told to retry would
                with counting:
                    outcomes[outcome] += 1

    clients = [threading.Thread(target=verify_in_a_loop, args=(key,)) for key in verifying_keys]
    for client in clients:
        client.start()
    children_seen: list[int] = []
    p99s: list[float] = []
    try:
        with server.channel() as channel:
            signing = signing_pb2_grpc.SigningServiceStub(channel)
            metadata = [("x-api-key", signing_key)]

            def sign_batch(count: int, measured: list[float] | None) -> None:
                digests = [hashlib.sha256(os.urandom(16)).digest() for _ in range(count)]
                token = signing.Authorize(signing_pb2.AuthorizeRequest(
                    account=created.account.username, password=PASSWORD, credential_id=credential,
                    hash_algorithm=signing_pb2.HASH_ALGORITHM_SHA256, digests=digests),
                    metadata=metadata, timeout=30).activation_token
                for digest in digests:
                    began = time.perf_counter()
                    signing.SignHash(signing_pb2.SignHashRequest(
                        credential_id=credential, activation_token=token, signature_algorithm="ecdsa-sha256",
                        digests=[digest]), metadata=metadata, timeout=30)
                    if measured is not None:
                        measured.append(time.perf_counter() - began)

            deadline = time.monotonic() + 60  # warm-up, until verifications are under way
            while time.monotonic() < deadline:
                sign_batch(20, None)
                if verifier_children() >= 2:
                    break
            for _ in range(ATTEMPTS):
                timings = []
                while len(timings) < SAMPLES:
                    sign_batch(50, timings)
                    children_seen.append(verifier_children())
                timings.sort()
                p99s.append(timings[int(len(timings) * 0.99) - 1])
                if p99s[-1] < P99_LIMIT_SECONDS:
                    break
    finally:
        stop.set()
        for client in clients:
            client.join(60)
    assert min(children_seen) >= 1 and max(children_seen) >= 2, children_seen  # verifying all along
    assert set(outcomes) <= {"OK", "cancelled", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT"}, outcomes
    assert p99s[-1] < P99_LIMIT_SECONDS, f"SignHash p99 of each try: {[f'{p * 1000:.1f} ms' for p in p99s]}"


def test_a_verifier_childs_refusal_names_the_workers_data_bound_when_that_is_lower(tmp_path):
    # In a process of its own: the data bound a worker sets on itself (server.worker_memory_mb) is
    # inherited by its verifier children, and may leave them less than their own budget.
    document = tmp_path / "bomb.pdf"
    document.write_bytes(compression_bomb(60))  # 2 MB that inflate to 60 MiB
    script = f"""
import asyncio, resource
from pathlib import Path
from signserver.errors import InvalidArgument
from signserver.pades.verification import TrustMaterial, VerificationLimits
from signserver.pades.verifier_process import VerifierProcesses, start_forkserver
# As a worker's bound might leave its children: 32 MiB beyond what this process (which has imported
# what the forkserver imports) holds.
with open("/proc/self/statm") as statm:
    bound = int(statm.read().split()[5]) * resource.getpagesize() + (32 << 20)
resource.setrlimit(resource.RLIMIT_DATA, (bound, bound))
start_forkserver()
try:
    asyncio.run(VerifierProcesses().verify(Path({str(document)!r}), TrustMaterial(roots=(), intermediates=(), crls=()),
                                           VerificationLimits(), 120))
except InvalidArgument as exc:
    print(exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(r"verification needs more memory than (\d+) MiB", done.stdout)
    assert found, done.stdout + done.stderr[-3000:]
    assert 0 < int(found.group(1)) <= 48  # the worker's bound, less what the child held: not 1024 MiB
