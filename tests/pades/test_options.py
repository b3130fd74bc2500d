"""Stamp options (QR code, seal image), an external TSA, certification limits, size limits."""

from __future__ import annotations

import dataclasses
import io
import subprocess

import grpc
import pytest
from PIL import Image


from signserver.errors import InvalidArgument
from signserver.http.ca_front import CaHttpFront
from signserver.pades.document import PadesLevel
from signserver.pades.sample import sample_pdf
from signserver.pades.stamp import StampOptions
from signserver.v1 import document_pb2_grpc
from tests.ca.test_http_hardening import FrontThread
from tests.grpc_api.conftest import ServerThread
from tests.pades.test_document_api import collect, sign_request
from tests.pades.test_signing import sign


def png(colour) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (60, 60), colour).save(out, format="PNG")
    return out.getvalue()


def test_qr_code_and_seal(pades_world, tmp_path):
    stamp = StampOptions(verification_url="https://verify.example.mo/doc/123", seal_png=png((200, 30, 30)),
                         reason="Aprovado", location="Macau", box=(300, 40, 560, 160))
    signed = sign(pades_world, sample_pdf(1), PadesLevel.B_B, stamp)
    assert pades_world[0].pades.verify_pdf(io.BytesIO(signed)).signatures[0].valid
    path = tmp_path / "signed.pdf"
    path.write_bytes(signed)
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True).stdout
    assert "Aprovado" in text and "Macau" in text
    images = subprocess.run(["pdfimages", "-list", str(path)], capture_output=True, text=True).stdout
    assert len(images.strip().splitlines()) > 2  # the seal (and the QR code's image, if any)
    with pytest.raises(InvalidArgument, match="seal image"):
        sign(pades_world, sample_pdf(1), PadesLevel.B_B, StampOptions(seal_png=b"not an image"))


def test_a_seal_image_of_too_many_pixels_is_refused_before_it_is_decoded(pades_world):
    # A PNG of one colour compresses to almost nothing: 8000 x 8000 pixels in 200 KB cost a
    # worker 385 MB and 2.3 s of CPU to draw. One of 2,100 x 2,000 pixels, beyond the limit:
    out = io.BytesIO()
    Image.new("RGB", (2100, 2000), (200, 30, 30)).save(out, format="PNG")
    with pytest.raises(InvalidArgument, match="seal image has 2100 x 2000 pixels"):
        sign(pades_world, sample_pdf(1), PadesLevel.B_B, StampOptions(seal_png=out.getvalue()))


def test_external_tsa(pades_world):
    service = pades_world[0]
    original = service.pades.config
    try:
        with FrontThread(CaHttpFront(service, "127.0.0.1:0")) as http:
            service.pades.config = dataclasses.replace(original, tsa_url=f"http://127.0.0.1:{http.port}/tsa")
            signed = sign(pades_world, sample_pdf(1), PadesLevel.B_T)
            report = service.pades.verify_pdf(io.BytesIO(signed)).signatures[0]
            assert report.timestamp and report.timestamp_valid
        service.pades.config = dataclasses.replace(original, tsa_url="http://127.0.0.1:9/tsa")  # nobody there
        from signserver.errors import UpstreamUnavailable

        with pytest.raises((UpstreamUnavailable, InvalidArgument)):
            sign(pades_world, sample_pdf(1), PadesLevel.B_T)
    finally:
        service.pades.config = original


def test_a_remote_tsas_token_costs_no_more_to_write_than_the_same_bytes_read_afresh(pades_world):
    """The answer of ``pades.tsa_url`` is checked in full on a copy: the full parse (asn1crypto's
    ``native``) left the token encoded again at every read, and a B-T signature through a remote
    TSA cost 2.9 s of CPU against 0.09 s through the service's own. Work is counted in function
    calls, not timed."""
    import asyncio
    import hashlib

    from asn1crypto import cms

    from signserver.pades.tsa import RemoteTimeStamper
    from tests.pades.test_cms_packaging import calls

    service = pades_world[0]
    with FrontThread(CaHttpFront(service, "127.0.0.1:0")) as http:
        token = asyncio.run(RemoteTimeStamper(f"http://127.0.0.1:{http.port}/tsa").async_timestamp(
            hashlib.sha256(b"a signature").digest(), "sha256"))
    afresh = cms.ContentInfo.load(token.dump())

    def written(value: cms.ContentInfo):  # as pyHanko writes a signature's unsigned attributes
        return lambda: cms.CMSAttributes([cms.CMSAttribute({"type": "signature_time_stamp_token",
                                                            "values": [value]})]).dump()

    assert calls(written(token)) < 2 * calls(written(afresh)), (calls(written(token)), calls(written(afresh)))


def test_certification_forbidding_changes_is_respected(pades_world):
    from asn1crypto import keys as asn1_keys
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    from signserver.pades.cms_signer import to_asn1

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certifier")])
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(7).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .sign(key, hashes.SHA256()))
    signer = signers.SimpleSigner(to_asn1(certificate), asn1_keys.PrivateKeyInfo.load(key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())), None)
    out = io.BytesIO()
    signers.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(sample_pdf(1))), signers.PdfSignatureMetadata(
        field_name="Certification", certify=True, docmdp_permissions=fields.MDPPerm.NO_CHANGES),
        signer=signer, output=out)
    with pytest.raises(InvalidArgument, match="cannot be signed"):
        sign(pades_world, out.getvalue(), PadesLevel.B_B)


def test_documents_over_the_limit_are_refused(pades_world, config):
    service, _, created, _ = pades_world
    _, api_key = service.applications.create("small-limit-app", otp_required=False)
    small = dataclasses.replace(config, pades=dataclasses.replace(config.pades, max_document_mb=1))
    original = service.config
    service.config = small
    try:
        with ServerThread(small, service) as server, server.channel() as channel:
            stub = document_pb2_grpc.DocumentServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                collect(stub.SignPdf(sign_request(created, sample_pdf(1) + b" " * (2 << 20)),
                                     metadata=[("x-api-key", api_key)], timeout=60))
    finally:
        service.config = original
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "too large" in refused.value.details()

