"""Seal images over gRPC's DocumentService: one that cannot be decoded is refused, naming its field,
before the holder's factors are spent; one of a mode pyHanko does not draw is converted and drawn."""

from __future__ import annotations

import io

import grpc
import pytest
from grpc_status import rpc_status
from google.rpc import error_details_pb2
from PIL import Image
from pyhanko.pdf_utils.reader import PdfFileReader

from signserver.accounts import otp
from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
from signserver.pades.sample import sample_pdf
from signserver.v1 import document_pb2, document_pb2_grpc
from tests.conftest import PASSWORD, enrol
from tests.grpc_api.conftest import ServerThread
from tests.pades.test_document_api import collect

SIZE = (37, 23)  # no other image of a stamp has this size


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def good_seal() -> bytes:
    return encoded(Image.new("RGB", SIZE, (200, 30, 30)))


def truncated_png() -> bytes:
    """A PNG whose header reads but whose pixel data stops half-way."""
    data = encoded(Image.effect_noise((200, 200), 64).convert("RGB"))
    return data[:len(data) // 2]


def grey_16_bit() -> Image.Image:
    """A 16-bit grey gradient (Pillow's mode I;16), spanning the whole 16-bit range."""
    return Image.linear_gradient("L").resize(SIZE).convert("I").point(lambda v: v * 257).convert("I;16")


def palette_with_transparency() -> bytes:
    image = Image.new("P", SIZE, 1)
    image.putpalette([255, 255, 255, 200, 30, 30])
    return encoded(image, transparency=0)


# Images Pillow decodes in modes pyHanko does not draw (it draws RGB, RGBA, P, PA, L, LA).
CONVERTIBLE = {
    "1-bit-png": lambda: encoded(Image.new("1", SIZE, 1)),
    "16-bit-grey-png": lambda: encoded(grey_16_bit()),
    "cmyk-jpeg": lambda: encoded(Image.new("CMYK", SIZE, (0, 200, 200, 30)), "JPEG"),
    "float-tiff": lambda: encoded(Image.new("F", SIZE, 128.0), "TIFF"),
    "palette-with-transparency-png": palette_with_transparency,
}


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            found += [(v.field, v.description) for v in request.field_violations]
    return found


def seal_in(signed: bytes) -> dict:
    """The seal's image XObject in the signature's appearance (found through its forms)."""
    [signature] = PdfFileReader(io.BytesIO(signed)).embedded_signatures
    forms, images = [signature.sig_field["/AP"]["/N"].get_object()], []
    while forms:
        for value in forms.pop().get("/Resources", {}).get("/XObject", {}).values():
            xobject = value.get_object()
            (images if xobject["/Subtype"] == "/Image" else forms).append(xobject)
    [seal] = [i for i in images if (i["/Width"], i["/Height"]) == SIZE]
    return seal


@pytest.fixture(scope="module")
def documents(pades_world, config):
    """The DocumentService stub and an application that requires the holder's OTP."""
    service = pades_world[0]
    _, api_key = service.applications.create("seal-app", otp_required=True)
    with ServerThread(config, service) as server, server.channel() as channel:
        yield document_pb2_grpc.DocumentServiceStub(channel), [("x-api-key", api_key)]


@pytest.fixture
def holder(pades_world):
    """A fresh certified holder: its OTP codes are its own (each is accepted once)."""
    service = pades_world[0]
    created, seed = enrol(service, kind=AccountKind.CORPORATE, organisation="Example Lda")
    service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra:test")
    return created, seed


def sign_pdf(stub, metadata, holder, seal: bytes, code: str, pdf: bytes) -> bytes:
    created, _ = holder
    header = document_pb2.SignPdfHeader(account=created.account.username, password=PASSWORD, otp=code,
                                        credential_id=created.credential.id, level="B-B",
                                        stamp=document_pb2.Stamp(seal_image=seal))
    requests = [document_pb2.SignPdfRequest(header=header), document_pb2.SignPdfRequest(chunk=pdf)]
    return collect(stub.SignPdf(iter(requests), metadata=metadata, timeout=60))[1]


def test_an_undecodable_seal_is_refused_naming_its_field_before_the_otp_is_spent(documents, holder, pades_world):
    stub, metadata = documents
    code, pdf = otp.code_at(holder[1], pades_world[0].clock.now()), sample_pdf(1)
    with pytest.raises(grpc.RpcError) as refused:
        sign_pdf(stub, metadata, holder, truncated_png(), code, pdf)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("the seal image cannot be decoded: ")
    assert field_violations(refused.value) == [("seal_image", refused.value.details())]
    # The same OTP (each code is accepted once) signs with a good seal: nothing was spent.
    signed = sign_pdf(stub, metadata, holder, good_seal(), code, pdf)
    [report] = pades_world[0].pades.verify_pdf(io.BytesIO(signed)).signatures
    assert report.intact and report.valid and report.trusted, report.summary


def test_prepare_refuses_an_undecodable_seal_naming_its_field(documents, holder):
    stub, metadata = documents
    header = document_pb2.SignPdfHeader(credential_id=holder[0].credential.id, level="B-B",
                                        stamp=document_pb2.Stamp(seal_image=truncated_png()))
    requests = [document_pb2.PrepareSignatureRequest(header=header),
                document_pb2.PrepareSignatureRequest(chunk=sample_pdf(1))]
    with pytest.raises(grpc.RpcError) as refused:
        stub.PrepareSignature(iter(requests), metadata=metadata, timeout=60)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("the seal image cannot be decoded: ")
    assert field_violations(refused.value) == [("seal_image", refused.value.details())]


@pytest.mark.parametrize("name", sorted(CONVERTIBLE))
def test_a_seal_of_a_mode_pyhanko_does_not_draw_is_converted_and_drawn(documents, holder, pades_world, name):
    stub, metadata = documents
    signed = sign_pdf(stub, metadata, holder, CONVERTIBLE[name](), otp.code_at(holder[1], pades_world[0].clock.now()),
                      sample_pdf(1))
    [report] = pades_world[0].pades.verify_pdf(io.BytesIO(signed)).signatures
    assert report.intact and report.valid and report.trusted, report.summary
    seal = seal_in(signed)
    assert seal["/ColorSpace"] in ("/DeviceRGB", "/DeviceGray")
    assert ("/SMask" in seal) == (name == "palette-with-transparency-png")
    if name == "16-bit-grey-png":
        # Scaled to 8 bits, not clipped: Pillow's own conversion would make the gradient all white.
        assert min(seal.data) < 20 and max(seal.data) > 230
