"""An uploaded application's signatures paired with the core's verification reports one for one,
never by a field name two signature fields share: `signserver ra serve` against a served core,
the attack of two signature fields named alike (a forged signature with the holder's certificate,
and beside it a genuine signature of the attacker's that the core finds valid) refused with the
ordinary refusal, the renewal not moving on, and the honest upload still accepted; and the RA's
check of the core's real verification, one report missing, doubled, about another signer or about
another signature of the same signer."""

from __future__ import annotations

import dataclasses
import datetime
import io

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers
from pyhanko_certvalidator.registry import SimpleCertificateStore

from signserver.client import SignServerClient
from signserver.ra.application import check_upload
from signserver.ra.errors import ApplicationRefused
from tests.ra.conftest import KUAN
from tests.ra.running import application_document, confirm, enrol, get, post, register, verify_identity
from tests.ra.running import core, eid, inbox, ra_files, ra_process  # noqa: F401 (fixtures)

DER = serialization.Encoding.DER
FIELD = "Applicant"


def _asn1_certificate(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(DER))


def _asn1_key(key) -> asn1_keys.PrivateKeyInfo:
    return asn1_keys.PrivateKeyInfo.load(key.private_bytes(DER, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))


def _self_signed(name: str, key, now: datetime.datetime) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
            .sign(key, hashes.SHA256()))


def _signed(pdf: bytes, signer: signers.Signer) -> bytes:
    return signers.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf)), signers.PdfSignatureMetadata(field_name=FIELD),
                            signer=signer).getvalue()


def _with_a_second_empty_field(pdf: bytes) -> bytes:
    """``pdf`` with an empty signature field of the same name added first in /Fields."""
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    page_ref = writer.root["/Pages"]["/Kids"][0]
    ref = writer.add_object(generic.DictionaryObject({
        pdf_name("/FT"): pdf_name("/Sig"), pdf_name("/T"): generic.TextStringObject(FIELD),
        pdf_name("/Type"): pdf_name("/Annot"), pdf_name("/Subtype"): pdf_name("/Widget"),
        pdf_name("/F"): generic.NumberObject(132), pdf_name("/P"): page_ref,
        pdf_name("/Rect"): generic.ArrayObject([generic.NumberObject(0)] * 4)}))
    form = writer.root["/AcroForm"]
    form["/Fields"].insert(0, ref)
    if isinstance(form.raw_get("/Fields"), generic.IndirectObject):
        writer.update_container(form["/Fields"])
    else:
        writer.update_container(form)
    page = page_ref.get_object()
    if "/Annots" in page:
        page["/Annots"].append(ref)
    else:
        page[pdf_name("/Annots")] = generic.ArrayObject([ref])
    writer.update_container(page)
    output = io.BytesIO()
    writer.write(output)
    return output.getvalue()


def attack(document: bytes, holder_eid, now: datetime.datetime) -> bytes:
    """The reviewer's upload: revision 1 signs field "Applicant" with the holder's (public)
    certificate and the attacker's key (intact, not valid); revision 2 adds a second, empty field
    "Applicant", first in /Fields; revision 3 signs it with the attacker's self-signed certificate
    (intact, valid, nothing after it)."""
    attacker_key = ec.generate_private_key(ec.SECP256R1())
    forged = signers.SimpleSigner(
        signing_cert=_asn1_certificate(holder_eid.certificate), signing_key=_asn1_key(attacker_key),
        cert_registry=SimpleCertificateStore.from_certs([_asn1_certificate(holder_eid.root)]))
    genuine = signers.SimpleSigner(signing_cert=_asn1_certificate(_self_signed("Mallory", attacker_key, now)),
                                   signing_key=_asn1_key(attacker_key),
                                   cert_registry=SimpleCertificateStore.from_certs([]))
    return _signed(_with_a_second_empty_field(_signed(document, forged)), genuine)


def awaiting_application(ra_process, inbox, core, account: str) -> tuple[str, bytes]:
    issued = enrol(core, account, "cloud-signature-government")
    register(ra_process, account)
    renewal_id = confirm(ra_process, inbox, issued.serial)["id"]
    verify_identity(ra_process, inbox, renewal_id)
    return renewal_id, application_document(ra_process, renewal_id)


def upload(ra_process, renewal_id: str, signed_pdf: bytes):
    return post(ra_process, f"/renewals/{renewal_id}/application/upload", content=signed_pdf,
                headers={"Content-Type": "application/pdf"})


def test_two_signature_fields_of_one_name_are_refused_and_the_renewal_waits(ra_process, inbox, core, eid, ca_clock):
    renewal_id, document = awaiting_application(ra_process, inbox, core, "ra-pairing-attack")
    forged = attack(document, eid, ca_clock.now())
    assert forged.startswith(document)

    refused = upload(ra_process, renewal_id, forged)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == "application_refused"
    shown = get(ra_process, f"/renewals/{renewal_id}").json()
    assert shown["state"] == "awaiting_application" and not shown["application_sha256"]
    assert get(ra_process, f"/renewals/{renewal_id}/application/signed").status_code != 200

    honest = upload(ra_process, renewal_id, eid.sign(document))  # the holder's own eID
    assert honest.status_code == 200, honest.text
    assert honest.json()["state"] == "awaiting_activation"


@pytest.fixture(scope="module")
def documents(served, ra_files):
    """The core's DocumentService as the RA reaches it (its ra-application certificate)."""
    with SignServerClient(f"localhost:{served.port}", root_certificates=(ra_files / "roots.pem").read_bytes(),
                          client_certificate=(ra_files / "ra-application.pem").read_bytes(),
                          client_key=(ra_files / "ra-application-key.pem").read_bytes(), timeout=120) as client:
        yield client


def test_a_signature_without_exactly_its_own_report_is_refused(eid, documents, ca_clock):
    """The core's real verification of an honest upload, then one report short, one too many, a
    report under the signature's name about another signer, and one about another signature of the
    same signer: each refused."""
    now = ca_clock.now()
    document = _blank_pdf()
    signed = eid.sign(document)
    verification = documents.verify_pdf(io.BytesIO(signed))
    [report] = verification.signatures
    roots = [eid.root]
    assert KUAN.name in check_upload(signed, len(document), verification, roots, KUAN.name, now)

    other = documents.verify_pdf(io.BytesIO(_signed(document, signers.SimpleSigner(
        signing_cert=_asn1_certificate(_self_signed("Mallory", key := ec.generate_private_key(ec.SECP256R1()), now)),
        signing_key=_asn1_key(key), cert_registry=SimpleCertificateStore.from_certs([])))))
    someone_elses = dataclasses.replace(other.signatures[0], field=report.field)
    assert someone_elses.intact and someone_elses.valid
    # The same signer's other signature of the same document: its report differs from the
    # signature's own only by the digest of its /Contents.
    [same_signer_another] = documents.verify_pdf(io.BytesIO(eid.sign(document))).signatures
    assert (same_signer_another.field, same_signer_another.signer) == (report.field, report.signer)
    assert same_signer_another.contents_sha256 not in (b"", report.contents_sha256)
    for reports in [(), (report, report), (someone_elses,), (report, someone_elses), (same_signer_another,)]:
        with pytest.raises(ApplicationRefused, match="not a signed application"):
            check_upload(signed, len(document), dataclasses.replace(verification, signatures=reports), roots,
                         KUAN.name, now)


def _blank_pdf() -> bytes:
    from pyhanko.pdf_utils.writer import PdfFileWriter

    writer = PdfFileWriter()
    writer.insert_page(generic.DictionaryObject({
        pdf_name("/Type"): pdf_name("/Page"),
        pdf_name("/MediaBox"): generic.ArrayObject([generic.NumberObject(n) for n in (0, 0, 595, 842)])}))
    output = io.BytesIO()
    writer.write(output)
    return output.getvalue()
