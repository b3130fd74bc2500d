"""The signed application document against a real served core (the RA as its RA and as its
application), the reference registry on loopback and the RA's real store: the whole
cloud-signature renewal with the application signed through the core's DocumentService, uploads
signed with an external eID (a trusted signer accepted; an untrusted one, another person, a changed
document refused), a wrong password refused and counted by the core, and the signed document's
digest in the core's audit evidence."""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import re
import urllib.parse
from dataclasses import replace

import pyotp
import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers
from pyhanko_certvalidator.registry import SimpleCertificateStore
from sqlalchemy import select

from signserver.client import CertificateClient, NewAccount, SignServerClient
from signserver.ra import renewal as machine
from signserver.ra.application import SIGNING_CLAIM
from signserver.ra.errors import ApplicationRefused, StepRefused
from signserver.ra.renewal import State
from signserver.ra.settings import RaSettings
from signserver.ra.store import repository
from signserver.ra.workflow import ActivationSecrets, RenewalWorkflow
from signserver.store.schema import audit_log
from tests.ca.test_certificate_service import client_pair
from tests.ra.conftest import KUAN, InlineExecutor, photo
from tests.ra.test_workflow import verify_emails

PASSWORD = "Current-pass-1"
PHRASE = "NewPhrase2027"
DER = serialization.Encoding.DER


@pytest.fixture(scope="module")
def roots(served) -> bytes:
    return served.config.tls.cert_file.read_bytes() + served.config.tls.client_ca_file.read_bytes()


@pytest.fixture(scope="module")
def core(served, ca_service, ca_clock, roots):
    _, certificate, key = client_pair(ca_service, "client-ra", "ra-application-tests")
    with CertificateClient(f"localhost:{served.port}", root_certificates=roots, client_certificate=certificate,
                           client_key=key, timeout_seconds=60, clock=ca_clock) as client:
        yield client


@pytest.fixture(scope="module")
def documents(served, ca_service, roots):
    """The RA as an application of the core (an ASP client certificate; OTP required)."""
    issued, certificate, key = client_pair(ca_service, "client-asp", "ra-application")
    ca_service.applications.set_client_certificate("ra-application",
                                                   hashlib.sha256(issued.certificate.public_bytes(DER)).hexdigest())
    with SignServerClient(f"localhost:{served.port}", root_certificates=roots, client_certificate=certificate,
                          client_key=key, timeout=120) as client:
        yield client


class ExternalEid:
    """A root and a signer certificate made here, as an external eID's would be."""

    def __init__(self, now: datetime.datetime, holder_name: str = KUAN.name):
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test eID Root")])
        self.root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
                     .public_key(self.root_key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=3650))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                    critical=True)
                     .sign(self.root_key, hashes.SHA256()))
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = (x509.CertificateBuilder()
                            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, holder_name)]))
                            .issuer_name(root_name).public_key(self.key.public_key())
                            .serial_number(x509.random_serial_number())
                            .not_valid_before(now - datetime.timedelta(days=1))
                            .not_valid_after(now + datetime.timedelta(days=365))
                            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                            .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False),
                                           critical=True)
                            .sign(self.root_key, hashes.SHA256()))

    def root_file(self, folder) -> object:
        path = folder / f"eid-root-{self.root.serial_number}.pem"
        path.write_bytes(self.root.public_bytes(serialization.Encoding.PEM))
        return path

    def sign(self, pdf: bytes) -> bytes:
        """``pdf`` signed by this eID's holder with pyHanko (an incremental update)."""
        key_der = self.key.private_bytes(DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        signer = signers.SimpleSigner(
            signing_cert=asn1_x509.Certificate.load(self.certificate.public_bytes(DER)),
            signing_key=asn1_keys.PrivateKeyInfo.load(key_der),
            cert_registry=SimpleCertificateStore.from_certs([asn1_x509.Certificate.load(self.root.public_bytes(DER))]))
        output = signers.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf)),
                                  signers.PdfSignatureMetadata(field_name="Applicant"), signer=signer)
        return output.getvalue()


def rotated(pdf: bytes) -> bytes:
    """``pdf`` with an incremental update that turns its page: it still begins with ``pdf``."""
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    page = writer.root["/Pages"]["/Kids"][0].get_object()
    page["/Rotate"] = generic.NumberObject(90)
    writer.update_container(page)
    output = io.BytesIO()
    writer.write(output)
    return output.getvalue()


@pytest.fixture(scope="module")
def ra_state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ra-application-state")  # the extracted font, once for the module


def make_workflow(ra_database, ca_clock, registry_client, core, documents, ra_state_dir, trust_roots=()):
    settings = RaSettings(state_dir=ra_state_dir, notice_days=3650, face_threshold=0.8,
                          application_trust_roots=tuple(trust_roots))
    return RenewalWorkflow(ra_database, ca_clock, settings, registry=registry_client, certificates=core,
                           documents=documents, executor=InlineExecutor())


def enrolled(core, name: str, profile: str = "cloud-signature-government"):
    """KUAN's account ``name`` in the core (its keys P-256: tests/ra/running.py's create_account
    says why) with a certificate of ``profile``; returns the holder and the certificate."""
    core.create_account(NewAccount(account=name, holder_name=KUAN.name, emails=KUAN.emails, password=PASSWORD,
                                   kind="government", organisation="DSAJ", department="Legal",
                                   revocation_phrase="OldPhrase2024", key_algorithm="ec-p256"))
    csr = None
    if not profile.startswith("cloud-signature"):  # a key made on the holder's card
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, KUAN.name)]))
               .sign(key, hashes.SHA256()).public_bytes(DER))
    return replace(KUAN, account=name), core.issue_certificate(name, profile, csr=csr)


def awaiting_application(workflow, ra_database, core, name: str, profile: str = "cloud-signature-government"):
    holder, issued = enrolled(core, name, profile)
    workflow.register_holder(holder, "dsaj-operator")
    renewal = workflow.confirm_renewal(issued.serial, "dsaj-operator")
    workflow.record_consent(renewal.id)
    verify_emails(workflow, ra_database, renewal)
    workflow.check_registry(renewal.id)
    workflow.compare_face(renewal.id, photo("kuan-weng-sam.png"))
    agreed = workflow.accept_agreement(renewal.id)
    assert agreed.state is State.AWAITING_APPLICATION and not agreed.application_sha256
    with pytest.raises(StepRefused):
        workflow.start_activation(renewal.id, ActivationSecrets(password=PASSWORD, revocation_phrase=PHRASE))
    return renewal, issued


def otp_now(ca_service, ca_clock, account: str) -> str:
    """A fresh OTP seed for ``account`` and its code at the core's time."""
    uri = ca_service.accounts.reset_otp(account, "test")
    seed = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0]
    return pyotp.TOTP(seed).at(ca_clock.now())


def ra_evidence(ca_service, reference: str) -> dict:
    with ca_service.database.read() as conn:
        records = conn.execute(select(audit_log).where(audit_log.c.event == "ra.request")).all()
    [detail] = [json.loads(r.detail) for r in records if json.loads(r.detail)["evidence"]["reference"] == reference]
    return detail


def test_a_cloud_signature_renewal_with_the_application_signed_through_the_core(
        ra_database, ca_clock, registry_client, core, documents, ra_state_dir, ca_service):
    workflow = make_workflow(ra_database, ca_clock, registry_client, core, documents, ra_state_dir)
    renewal, issued = awaiting_application(workflow, ra_database, core, "ra-app-1")
    document = workflow.application_document(renewal.id)
    assert document.document.startswith(b"%PDF-") and document.document_sha256 == \
        hashlib.sha256(document.document).hexdigest()
    assert workflow.application_document(renewal.id) == document  # kept, not made again

    code = otp_now(ca_service, ca_clock, "ra-app-1")
    signed = workflow.sign_application(renewal.id, PASSWORD, code)
    assert signed.state is State.AWAITING_ACTIVATION
    record = workflow.signed_application(renewal.id)
    assert record.signed_with == "cloud-signature" and record.signed_document.startswith(document.document)
    assert signed.application_sha256 == hashlib.sha256(record.signed_document).hexdigest() == record.signed_sha256
    verdict = documents.verify_pdf(io.BytesIO(record.signed_document))
    assert verdict.verdict, verdict.reason

    workflow.start_activation(renewal.id, ActivationSecrets(password=PASSWORD, revocation_phrase=PHRASE))
    done = workflow.get(renewal.id)
    assert done.state is State.ACTIVATED, done.refusal
    evidence = ra_evidence(ca_service, done.activation_reference)["evidence"]
    assert evidence["application_sha256"] == record.signed_sha256
    with ra_database.transaction() as conn:
        entries = repository.audit_entries(conn, renewal.id)
    assert {"application_generated", "application_signed"} <= {e["action"] for e in entries}
    assert not any(PASSWORD in e["detail"] or code in e["detail"] for e in entries)


def test_a_wrong_password_is_refused_and_counts_toward_the_lockout(ra_database, ca_clock, registry_client, core,
                                                                  documents, ra_state_dir, ca_service):
    workflow = make_workflow(ra_database, ca_clock, registry_client, core, documents, ra_state_dir)
    renewal, _ = awaiting_application(workflow, ra_database, core, "ra-app-2")
    before = ca_service.accounts.lock_state("ra-app-2").failed_attempts
    with pytest.raises(ApplicationRefused, match="not right") as refused:
        workflow.sign_application(renewal.id, "Wrong-pass-1", otp_now(ca_service, ca_clock, "ra-app-2"))
    assert "Wrong-pass-1" not in str(refused.value)
    assert ca_service.accounts.lock_state("ra-app-2").failed_attempts == before + 1
    still = workflow.get(renewal.id)
    assert still.state is State.AWAITING_APPLICATION and not still.application_sha256
    assert still.application_signing_until is None  # the refused signing is over: the holder signs again
    assert workflow.sign_application(renewal.id, PASSWORD, otp_now(ca_service, ca_clock, "ra-app-2")).state is \
        State.AWAITING_ACTIVATION


def test_a_signing_under_way_is_not_sent_again_and_one_left_by_a_stopped_process_lapses(
        ra_database, ca_clock, registry_client, core, documents, ra_state_dir, ca_service):
    workflow = make_workflow(ra_database, ca_clock, registry_client, core, documents, ra_state_dir)
    renewal, _ = awaiting_application(workflow, ra_database, core, "ra-app-6")
    now = ca_clock.now()
    with ra_database.transaction() as conn:  # claimed by an RA process that stopped before the core answered
        claimed = machine.start_application_signing(repository.get_renewal(conn, renewal.id), now + SIGNING_CLAIM, now)
        repository.save_renewal(conn, claimed)
    failed = ca_service.accounts.lock_state("ra-app-6").failed_attempts
    document = workflow.application_document(renewal.id).document
    for sign in (lambda: workflow.sign_application(renewal.id, PASSWORD, otp_now(ca_service, ca_clock, "ra-app-6")),
                 lambda: workflow.upload_application(renewal.id, document + b"%%EOF\n")):
        with pytest.raises(StepRefused) as refused:
            sign()
        assert refused.value.reason == "application_signing"
    ca_clock.advance(seconds=SIGNING_CLAIM.total_seconds())
    signed = workflow.sign_application(renewal.id, PASSWORD, otp_now(ca_service, ca_clock, "ra-app-6"))
    assert signed.state is State.AWAITING_ACTIVATION and signed.application_signing_until is None
    assert ca_service.accounts.lock_state("ra-app-6").failed_attempts == failed


def test_an_upload_signed_by_a_trusted_external_eid_is_accepted(ra_database, ca_clock, registry_client, core,
                                                               documents, ra_state_dir, tmp_path, ca_service):
    eid = ExternalEid(ca_clock.now())
    workflow = make_workflow(ra_database, ca_clock, registry_client, core, documents, ra_state_dir,
                             trust_roots=[eid.root_file(tmp_path)])
    renewal, _ = awaiting_application(workflow, ra_database, core, "ra-app-3", profile="qualified-government")
    signed_pdf = eid.sign(workflow.application_document(renewal.id).document)
    done = workflow.upload_application(renewal.id, signed_pdf)
    assert done.state is State.AWAITING_IN_PERSON and done.help_code == "AC-AB-0007"
    assert done.application_sha256 == hashlib.sha256(signed_pdf).hexdigest()
    record = workflow.signed_application(renewal.id)
    assert record.signed_with == "upload" and KUAN.name in record.signer and record.signed_document == signed_pdf


def test_an_upload_by_an_untrusted_signer_or_another_person_is_refused(ra_database, ca_clock, registry_client, core,
                                                                       documents, ra_state_dir, tmp_path):
    trusted, untrusted = ExternalEid(ca_clock.now()), ExternalEid(ca_clock.now())
    someone_else = ExternalEid(ca_clock.now(), holder_name="CHAN TAI MAN")
    workflow = make_workflow(ra_database, ca_clock, registry_client, core, documents, ra_state_dir,
                             trust_roots=[trusted.root_file(tmp_path), someone_else.root_file(tmp_path)])
    renewal, _ = awaiting_application(workflow, ra_database, core, "ra-app-4")
    document = workflow.application_document(renewal.id).document
    with pytest.raises(ApplicationRefused, match="trusted root"):
        workflow.upload_application(renewal.id, untrusted.sign(document))
    with pytest.raises(ApplicationRefused, match="does not name the holder"):
        workflow.upload_application(renewal.id, someone_else.sign(document))
    assert workflow.get(renewal.id).state is State.AWAITING_APPLICATION
    assert workflow.upload_application(renewal.id, trusted.sign(document)).state is State.AWAITING_ACTIVATION


def test_a_changed_document_is_refused(ra_database, ca_clock, registry_client, core, documents, ra_state_dir, tmp_path):
    eid = ExternalEid(ca_clock.now())
    workflow = make_workflow(ra_database, ca_clock, registry_client, core, documents, ra_state_dir,
                             trust_roots=[eid.root_file(tmp_path)])
    renewal, _ = awaiting_application(workflow, ra_database, core, "ra-app-5")
    document = workflow.application_document(renewal.id).document
    changed = document.replace(b"/MediaBox [", b"/MediaBox  [", 1)  # another document, signed
    assert changed != document
    with pytest.raises(ApplicationRefused, match="not the application document"):
        workflow.upload_application(renewal.id, eid.sign(changed))
    signed = bytearray(eid.sign(document))
    gap_start, gap_end = map(int, re.search(rb"/ByteRange \[\s*0 (\d+) (\d+)", signed).groups())
    contents = bytes(signed[gap_start + 1:gap_end - 1]).rstrip(b"0")  # the CMS, then its zero padding
    at = gap_start + 1 + len(contents) - 8  # a hex digit of the signature value, at the CMS's end
    signed[at:at + 1] = b"1" if signed[at:at + 1] != b"1" else b"2"
    with pytest.raises(ApplicationRefused, match="intact and valid|readable"):
        workflow.upload_application(renewal.id, bytes(signed))
    with pytest.raises(ApplicationRefused, match="not the application document"):
        workflow.upload_application(renewal.id, document)  # not signed at all
    with pytest.raises(ApplicationRefused, match="changed before it was signed"):
        workflow.upload_application(renewal.id, eid.sign(rotated(document)))  # the bytes begin alike
    assert workflow.get(renewal.id).state is State.AWAITING_APPLICATION
