"""A 100 MB PDF signs and verifies through the gRPC server, with bounded memory."""

from __future__ import annotations

import hashlib
import resource

import pytest

from signserver.pades.sample import write_large_pdf
from signserver.v1 import document_pb2
from tests.conftest import PASSWORD
from tests.pades.test_document_api import api  # noqa: F401 - the fixture

CHUNK = 1 << 20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.timeout(600)
def test_hundred_megabytes(api, pades_world, tmp_path):  # noqa: F811
    stub, metadata, created = api
    small, source = tmp_path / "small.pdf", tmp_path / "large.pdf"
    write_large_pdf(small, 1)
    write_large_pdf(source, 100)

    def sign(path, signed):
        def requests():
            yield document_pb2.SignPdfRequest(header=document_pb2.SignPdfHeader(
                account=created.account.username, password=PASSWORD, credential_id=created.credential.id,
                level="B-T"))
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    yield document_pb2.SignPdfRequest(chunk=chunk)

        digest = hashlib.sha256()
        with signed.open("wb") as out:
            for response in stub.SignPdf(requests(), metadata=metadata, timeout=600):
                if response.WhichOneof("part") == "chunk":
                    out.write(response.chunk)
                    digest.update(response.chunk)
                else:
                    expected = response.result.sha256
        assert digest.digest() == expected

    sign(small, tmp_path / "small-signed.pdf")  # the same path once, so one-time set-up is not counted
    before = peak_rss_mb()
    signed = tmp_path / "signed.pdf"
    sign(source, signed)
    assert signed.stat().st_size > source.stat().st_size
    growth = peak_rss_mb() - before
    # Server and client share this process; neither holds the document whole (100 MB).
    print(f"peak memory growth while signing 100 MB: {growth:.0f} MB")
    assert growth < 80, f"peak memory grew by {growth:.0f} MB while signing"

    with signed.open("rb") as handle:
        report = pades_world[0].pades.verify_pdf(handle).signatures[0]
    assert report.intact and report.valid and report.trusted
