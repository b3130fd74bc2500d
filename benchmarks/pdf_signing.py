"""SignPdf over gRPC beside pyHanko's plain `sign_pdf` with a software key, in one run.

Documents of 1 and 50 pages, invisible and with the default visible stamp in Chinese, at
concurrency 1 and 4 (callers of the load generator, each with its own connection), with latency
percentiles.
"""

from __future__ import annotations

import datetime
import io
import time

from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers

from benchmarks import load
from benchmarks.load import LoadResult
from signserver.pades.cms_signer import to_asn1
from signserver.pades.sample import sample_pdf
from signserver.v1 import document_pb2, document_pb2_grpc

CHUNK = 1 << 20


def software_baseline(pdf: bytes, seconds: float) -> LoadResult:
    """pyHanko's plain sign_pdf, invisible, with an RSA-2048 key in memory."""
    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "software key")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .sign(key, hashes.SHA256()))
    signer = signers.SimpleSigner(
        signing_cert=to_asn1(certificate),
        signing_key=asn1_keys.PrivateKeyInfo.load(key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
        cert_registry=None)

    def once():
        signers.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf)),
                         signers.PdfSignatureMetadata(field_name="Signature1"), signer=signer, output=io.BytesIO())

    return _timed("pyHanko sign_pdf, software key, invisible, 1 page", once, seconds)


def _timed(name: str, operation, seconds: float) -> LoadResult:
    operation()  # warm up
    durations: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() < start + seconds:
        began = time.perf_counter()
        operation()
        durations.append(time.perf_counter() - began)
    return LoadResult(name, len(durations), time.perf_counter() - start, durations)


def document_signer(pdf: bytes, visible: bool) -> load.Caller:
    """SignPdf (one-call flow, B-LT) of ``pdf``, invisible or with the default stamp in Chinese."""
    def setup(channel, target: load.Target, name: str):
        stub = document_pb2_grpc.DocumentServiceStub(channel)

        def requests():
            yield document_pb2.SignPdfRequest(header=document_pb2.SignPdfHeader(
                account=target.account, password=target.password, credential_id=target.credential, level="B-LT",
                stamp=document_pb2.Stamp(invisible=not visible, caption="數碼簽署")))
            for start in range(0, len(pdf), CHUNK):
                yield document_pb2.SignPdfRequest(chunk=pdf[start:start + CHUNK])

        def call() -> int:
            for _ in stub.SignPdf(requests(), timeout=120):
                pass
            return 1

        call()  # warm: the first stamp of a character set makes its font once
        return call
    return setup


def sign_pdf_rates(target: load.Target, seconds: float) -> list[LoadResult]:
    """Each document and concurrency invisible and with the stamp, measured alternately
    (load.alternated): what the stamp costs is their ratio, which a machine's drift decided when
    one followed the other (1 page at concurrency 1, 2026-12-04: +21 % one after the other, +2 %
    alternated)."""
    results = {}
    for pages in (1, 50):
        pdf = sample_pdf(pages)
        for concurrency in (1, 4):
            def measured(visible: bool, pdf=pdf, pages=pages, concurrency=concurrency):
                label = "visible CJK stamp" if visible else "invisible"
                return lambda half: load.run_load(f"SignPdf B-LT, {label}, {pages} page(s), concurrency {concurrency}",
                                                  target, document_signer(pdf, visible), concurrency, half,
                                                  setup_seconds=1.0)
            results[pages, False, concurrency], results[pages, True, concurrency] = load.alternated(
                measured(False), measured(True), seconds)
    return [results[key] for key in sorted(results)]  # by pages, then invisible first, then concurrency


def _peak_rss_mb(pid: int) -> float:
    """The largest peak resident memory among the server's worker processes."""
    children = open(f"/proc/{pid}/task/{pid}/children").read().split() or [str(pid)]
    peaks = []
    for child in children:
        for line in open(f"/proc/{child}/status"):
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return max(peaks, default=float("nan"))


def large_document_memory(channel, account: str, password: str, credential: str, server_pid: int,
                          megabytes: int = 100) -> tuple[float, float, float]:
    """Sign a ``megabytes`` MB document once; return (seconds, server peak RSS before, after) in MB."""
    import tempfile
    from pathlib import Path

    from signserver.pades.sample import write_large_pdf

    stub = document_pb2_grpc.DocumentServiceStub(channel)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "large.pdf"
        write_large_pdf(path, megabytes)

        def requests():
            yield document_pb2.SignPdfRequest(header=document_pb2.SignPdfHeader(
                account=account, password=password, credential_id=credential, level="B-LT"))
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    yield document_pb2.SignPdfRequest(chunk=chunk)

        before = _peak_rss_mb(server_pid)
        start = time.perf_counter()
        for _ in stub.SignPdf(requests(), timeout=600):
            pass
        return time.perf_counter() - start, before, _peak_rss_mb(server_pid)
