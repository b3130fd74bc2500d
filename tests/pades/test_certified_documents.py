"""Certified documents (DocMDP) stay valid: signing one never breaks its certification.

The certified documents are made here with pyHanko, by a certifier with a software key and a
self-made certificate; the certification is then checked with pyHanko's validator (its difference
analysis decides whether what we added is allowed by the certification's permissions) and with our
own verification.
"""

from __future__ import annotations

import datetime
import io

import grpc
import pytest
from asn1crypto import keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.fields import MDPPerm
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from signserver.errors import InvalidArgument
from signserver.pades.document import PadesLevel
from signserver.pades.sample import sample_pdf
from signserver.pades.stamp import StampOptions
from signserver.secret import Secret
from signserver.v1 import document_pb2, document_pb2_grpc
from tests.conftest import PASSWORD
from tests.grpc_api.conftest import ServerThread

# Where the certifier puts the empty signature fields it leaves for others (page 1 of 1).
FIELD_BOXES = {"Approval": (300.0, 36.0, 540.0, 108.0), "Witness": (300.0, 136.0, 540.0, 208.0)}


@pytest.fixture(scope="module")
def certifier():
    """A software signer with a self-made certificate, and the certificate to trust it by."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Certifying Office")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
        .sign(key, hashes.SHA256()))
    certificate = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    signing_key = keys.PrivateKeyInfo.load(key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return signers.SimpleSigner(signing_cert=certificate, signing_key=signing_key,
                                cert_registry=SimpleCertificateStore()), certificate


def certified(certifier, permission: MDPPerm, empty_fields=("Approval",)) -> bytes:
    """A one-page document certified with ``permission``, with ``empty_fields`` left to sign."""
    writer = IncrementalPdfFileWriter(io.BytesIO(sample_pdf(1)))
    for name in empty_fields:
        fields.append_signature_field(writer, fields.SigFieldSpec(sig_field_name=name, on_page=0,
                                                                  box=FIELD_BOXES[name]))
    out = io.BytesIO()
    metadata = signers.PdfSignatureMetadata(field_name="Certification", certify=True, docmdp_permissions=permission)
    signers.PdfSigner(metadata, certifier[0]).sign_pdf(writer, output=out)
    return out.getvalue()


def sign(world, data: bytes, stamp: StampOptions | None = None, level=PadesLevel.B_B) -> bytes:
    service, app, created, _ = world
    out = io.BytesIO()
    service.pades.sign_pdf(app, created.account.username, Secret(PASSWORD), None, created.credential.id,
                           io.BytesIO(data), out, level, stamp or StampOptions())
    return out.getvalue()


def assert_certification_holds(certifier, signed: bytes) -> None:
    """pyHanko's validator judges what was added after the certification to be allowed by it."""
    reader = PdfFileReader(io.BytesIO(signed))
    certification = next(s for s in reader.embedded_signatures if s.field_name == "Certification")
    status = validate_pdf_signature(certification, ValidationContext(trust_roots=[certifier[1]]))
    assert status.intact and status.valid and status.trusted, status.summary()
    assert status.modification_level is not None and status.modification_level < ModificationLevel.OTHER, \
        status.modification_level
    assert status.docmdp_ok, (status.modification_level, status.docmdp_level)


def signed_fields(signed: bytes) -> dict[str, tuple[float, ...] | None]:
    """Each signed field's widget rectangle (None when it has no area) by field name."""
    result = {}
    for name, value, reference in fields.enumerate_sig_fields(PdfFileReader(io.BytesIO(signed)), filled_status=True):
        field = reference.get_object()
        widget = field["/Kids"][0].get_object() if "/Kids" in field else field
        rect = tuple(float(v) for v in widget["/Rect"])
        has_area = rect[2] != rect[0] and rect[3] != rect[1]
        result[name] = rect if has_area and "/AP" in widget else None
    return result


def field_names(signed: bytes) -> set[str]:
    return {name for name, _, _ in fields.enumerate_sig_fields(PdfFileReader(io.BytesIO(signed)))}


def test_form_filling_certification_is_signed_in_its_empty_field(pades_world, certifier):
    document = certified(certifier, MDPPerm.FILL_FORMS)
    signed = sign(pades_world, document, level=PadesLevel.B_LT)

    assert field_names(signed) == {"Certification", "Approval"}, "no new field may be added"
    assert signed_fields(signed)["Approval"] == FIELD_BOXES["Approval"], "our stamp is drawn in the field"
    assert_certification_holds(certifier, signed)
    reports = {r.field: r for r in pades_world[0].pades.verify_pdf(io.BytesIO(signed)).signatures}
    assert reports["Approval"].intact and reports["Approval"].valid and reports["Approval"].trusted
    assert reports["Certification"].intact and reports["Certification"].modification_allowed, \
        reports["Certification"].summary


def test_form_filling_certification_is_signed_in_the_named_empty_field(pades_world, certifier):
    document = certified(certifier, MDPPerm.FILL_FORMS, empty_fields=("Approval", "Witness"))
    signed = sign(pades_world, document, StampOptions(field_name="Witness"))

    assert field_names(signed) == {"Certification", "Approval", "Witness"}
    assert set(signed_fields(signed)) == {"Certification", "Witness"}
    assert signed_fields(signed)["Witness"] == FIELD_BOXES["Witness"]
    assert_certification_holds(certifier, signed)


def test_an_invisible_request_still_fills_the_certifiers_field(pades_world, certifier):
    # Under P=2 the only place for a signature is a field the certifier left; it shows our
    # stamp, not a generic appearance, because the field is visible whatever the caller asked.
    document = certified(certifier, MDPPerm.FILL_FORMS)
    signed = sign(pades_world, document, StampOptions(visible=False))

    assert field_names(signed) == {"Certification", "Approval"}
    widget = _widget(signed, "Approval")
    assert "/AP" in widget
    assert b"signed by" not in _appearance_bytes(widget), "not pyHanko's generic stamp"
    assert_certification_holds(certifier, signed)


def test_a_certification_whose_transform_was_stripped_is_still_a_certification(pades_world, certifier):
    """/Perms /DocMDP without the signature's DocMDP reference (damaged, or stripped to pass the
    document off as uncertified) is read as certifying with form filling allowed, not as none."""
    import pikepdf

    with pikepdf.open(io.BytesIO(certified(certifier, MDPPerm.FILL_FORMS, empty_fields=()))) as pdf:
        del pdf.Root.Perms.DocMDP.Reference
        stripped = io.BytesIO()
        pdf.save(stripped)
    with pytest.raises(InvalidArgument, match="new signature field"):
        sign(pades_world, stripped.getvalue())


def test_form_filling_certification_without_an_empty_field_is_refused(pades_world, certifier):
    document = certified(certifier, MDPPerm.FILL_FORMS, empty_fields=())
    with pytest.raises(InvalidArgument) as refusal:
        sign(pades_world, document)
    message = str(refusal.value)
    assert "certif" in message and "new signature field" in message, message
    assert "ask the certifier" in message, message


def test_a_new_field_name_on_a_form_filling_certification_is_refused(pades_world, certifier):
    document = certified(certifier, MDPPerm.FILL_FORMS, empty_fields=("Approval", "Witness"))
    with pytest.raises(InvalidArgument) as refusal:
        sign(pades_world, document, StampOptions(field_name="Mine"))
    message = str(refusal.value)
    assert "'Mine'" in message and "'Approval'" in message and "'Witness'" in message, message


def test_no_changes_certification_is_refused_with_what_to_do(pades_world, certifier):
    document = certified(certifier, MDPPerm.NO_CHANGES)
    with pytest.raises(InvalidArgument) as refusal:
        sign(pades_world, document)
    message = str(refusal.value)
    assert "P=1" in message and "no changes" in message, message
    assert "ask the certifier" in message, message


def test_annotation_certification_allows_a_new_invisible_field(pades_world, certifier):
    document = certified(certifier, MDPPerm.ANNOTATE, empty_fields=())
    signed = sign(pades_world, document, StampOptions(field_name="Mine", visible=False))

    assert field_names(signed) == {"Certification", "Mine"}
    assert_certification_holds(certifier, signed)


def test_annotation_certification_refuses_a_new_visible_field(pades_world, certifier):
    # The standard lets P=3 add annotations, but validators judge a new visible signature widget
    # after a certification a change it does not allow (pyHanko: ModificationLevel.OTHER).
    document = certified(certifier, MDPPerm.ANNOTATE, empty_fields=())
    with pytest.raises(InvalidArgument) as refusal:
        sign(pades_world, document, StampOptions(field_name="Mine"))
    message = str(refusal.value)
    assert "P=3" in message and "sign invisibly" in message, message


def test_a_second_signature_after_ours_keeps_the_certification(pades_world, certifier):
    document = certified(certifier, MDPPerm.FILL_FORMS, empty_fields=("Approval", "Witness"))
    once = sign(pades_world, document)
    twice = sign(pades_world, once)

    assert set(signed_fields(twice)) == {"Certification", "Approval", "Witness"}
    assert_certification_holds(certifier, twice)
    with pytest.raises(InvalidArgument, match="ask the certifier"):
        sign(pades_world, twice)


def _widget(signed: bytes, name: str):
    reader = PdfFileReader(io.BytesIO(signed))
    field = next(ref for n, _, ref in fields.enumerate_sig_fields(reader) if n == name).get_object()
    return field["/Kids"][0].get_object() if "/Kids" in field else field


def _appearance_bytes(widget) -> bytes:
    form = widget["/AP"]["/N"]
    return form.data


def test_an_unknown_permission_level_is_refused_not_guessed(pades_world, certifier):
    document = certified(certifier, MDPPerm.FILL_FORMS)
    assert document.count(b"/P 2") == 1
    with pytest.raises(InvalidArgument, match="unknown permission level"):
        sign(pades_world, document.replace(b"/P 2", b"/P 7"))


@pytest.fixture(scope="module")
def api(pades_world, config):
    service, _, created, _ = pades_world
    _, api_key = service.applications.create("certified-app", otp_required=False)
    with ServerThread(config, service) as server, server.channel() as channel:
        yield document_pb2_grpc.DocumentServiceStub(channel), [("x-api-key", api_key)], created


def _sign_over_grpc(api, data: bytes):
    stub, metadata, created = api
    requests = iter([document_pb2.SignPdfRequest(header=document_pb2.SignPdfHeader(
        account=created.account.username, password=PASSWORD, credential_id=created.credential.id, level="B-B",
        stamp=document_pb2.Stamp())), document_pb2.SignPdfRequest(chunk=data)])
    return b"".join(r.chunk for r in stub.SignPdf(requests, metadata=metadata, timeout=120)
                    if r.WhichOneof("part") == "chunk")


def test_over_grpc_a_certified_document_is_signed_in_its_field_or_refused(api, certifier):
    stub, metadata, _ = api
    signed = _sign_over_grpc(api, certified(certifier, MDPPerm.FILL_FORMS))
    report = stub.VerifyPdf(iter([document_pb2.VerifyPdfRequest(chunk=signed)]), metadata=metadata, timeout=120)
    by_field = {s.field: s for s in report.signatures}
    assert set(by_field) == {"Certification", "Approval"}
    assert by_field["Certification"].intact and by_field["Certification"].modification_allowed

    with pytest.raises(grpc.RpcError) as refused:
        _sign_over_grpc(api, certified(certifier, MDPPerm.NO_CHANGES))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "P=1" in refused.value.details() and "ask the certifier" in refused.value.details()
