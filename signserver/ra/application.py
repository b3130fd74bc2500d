"""The application document step: after the agreement, the RA generates the application (a PDF,
signserver.ra.application_document) and the holder signs it, either

- with the current cloud-signature credential through the core's DocumentService, the RA acting
  as an application of the core: the holder's password and OTP pass through in memory, never
  stored or logged; or
- with an external eID, uploading the signed PDF: the core's VerifyPdf must find the signature
  intact and valid, the signed revision must contain the RA's document unchanged (the upload
  starts with its bytes), and the signer's certificate must chain to one of the configured
  ``application_trust_roots`` and name the holder.

Then the renewal moves on (activation, or the in-person queue) and the signed document's SHA-256
goes to the core with the activation's request (Evidence.application_sha256).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import io
import logging
from dataclasses import replace
from functools import cached_property
from pathlib import Path

from signserver.ra import renewal as machine
from signserver.ra.application_document import ApplicationData, FontSource, render
from signserver.ra.errors import (ApplicationRefused, ConcurrentUpdate, CoreUnavailable, RaError, SettingsError,
                                  StepRefused, core_error)
from signserver.ra.renewal import CLOUD_SIGNATURE, ApplicationRecord, Renewal
from signserver.ra.steps import HOLDER, RenewalSteps
from signserver.ra.store import repository

log = logging.getLogger(__name__)

UPLOAD = "upload"  # how the application was signed: with an external eID, or with CLOUD_SIGNATURE
DOCUMENT_TIMESTAMP = "/DocTimeStamp"  # a signature dictionary's /Type the core verifies without a report
# How long the core may take to sign the application: the bound signserver.ra.server.document_client
# puts on each call to the core's DocumentService. A signing claimed in the RA's database holds that
# long and a margin to record its result; one left by a process that stopped then lapses, and the
# holder can sign again.
CORE_SIGNING_SECONDS = 120.0
SIGNING_CLAIM = datetime.timedelta(seconds=CORE_SIGNING_SECONDS + 60)


class ApplicationSteps(RenewalSteps):
    """The application document: generated once per agreement, signed by the holder."""

    @cached_property
    def _fonts(self) -> FontSource:
        return FontSource(self._settings.state_dir, self._settings.application_font)

    def application_document(self, renewal_id: str) -> ApplicationRecord:
        """The renewal's application document, generated (and kept) on first use after the agreement.

        Raises: RenewalNotFound; StepRefused: the agreement is not accepted yet; CoreUnavailable
                (the certificate's subject data come from the core); SettingsError (no CJK font).
        """
        renewal = self.get(renewal_id)
        if renewal.agreement_at is None:
            raise StepRefused("the application document follows the acceptance of the agreement")
        with self._database.transaction() as conn:
            existing = repository.find_application(conn, renewal_id)
        if existing is not None and existing.agreed_at == renewal.agreement_at:
            return existing
        holder = self._holder(renewal.account)
        certificate = self._core(self._certificates.get_certificate, renewal.serial)
        organisation, department, title = subject_parts(certificate.certificate_der)
        data = ApplicationData(reference=renewal.id, holder_name=holder.name, account=renewal.account,
                               id_type=holder.id_type, id_number=holder.id_number, profile=renewal.profile,
                               emails=renewal.emails, organisation=organisation, department=department, title=title,
                               old_serial=renewal.serial, old_expires=renewal.expires,
                               agreed_at=renewal.agreement_at)
        document = render(data, self._fonts.face())
        now = self._clock.now()
        record = ApplicationRecord(renewal_id=renewal.id, agreed_at=renewal.agreement_at, document=document,
                                   document_sha256=hashlib.sha256(document).hexdigest(), created_at=now)
        with self._database.transaction() as conn:
            repository.save_application(conn, record)
            repository.audit(conn, now, HOLDER, "application_generated", renewal.id,
                             f"sha256={record.document_sha256}")
        return record

    def signed_application(self, renewal_id: str) -> ApplicationRecord:
        """Raises: RenewalNotFound; StepRefused: the application is not signed yet."""
        renewal = self.get(renewal_id)
        with self._database.transaction() as conn:
            record = repository.find_application(conn, renewal_id)
        if record is None or not renewal.application_sha256 or record.signed_sha256 != renewal.application_sha256:
            raise StepRefused("the application document is not signed yet")
        return record

    def sign_application(self, renewal_id: str, password: str, otp: str = "") -> Renewal:
        """Sign the application with the holder's current cloud-signature credential (the core's
        SignPdf, the RA as an application of the core). One signing of a renewal's application is
        under way at a time, in any RA process: it is claimed in the RA's database before the core
        is asked, so that a second one sent meanwhile (a double click) neither sends the holder's
        one-time password again nor counts as a wrong password in the core.

        Raises: RenewalNotFound; StepRefused: out of order (signed meanwhile too), a signing of the
                application under way ("application_signing"), or a certificate without a cloud
                credential (upload a document signed with an eID instead); ApplicationRefused: the
                password or OTP is not right, or the account is locked; CoreUnavailable: the core
                does not answer, or the RA is not set up as its application.
        """
        renewal = self.get(renewal_id)
        machine.before_application(renewal)
        if not password:
            raise StepRefused("enter the cloud-signature password (and the one-time password)",
                              reason="password_missing")
        document = self.application_document(renewal_id)
        certificate = self._core(self._certificates.get_certificate, renewal.serial)
        if not certificate.credential_id or not machine.is_cloud_signature(certificate.profile):
            raise StepRefused("this certificate holds no cloud-signature credential: upload the application "
                              "signed with your electronic ID", reason="no_cloud_credential")
        documents = self._require_documents()
        claimed = self._claim_signing(renewal_id)
        try:
            signed_bytes = self._signed_by_core(documents, claimed, document, password, otp, certificate.credential_id)
            return self._application_signed(claimed, document, signed_bytes, CLOUD_SIGNATURE, certificate.subject)
        except Exception:
            self._signing_ended(claimed)  # refused, or no signature: the holder may sign again
            raise

    def _signed_by_core(self, documents, renewal: Renewal, document: ApplicationRecord, password: str, otp: str,
                        credential_id: str) -> bytes:
        """The application document as the core signed it with the holder's credential.

        Raises: as sign_application.
        """
        from signserver.client import AccountLocked, AuthenticationRefused, PermissionRefused, SignServerClientError

        signed = io.BytesIO()
        try:
            documents.sign_pdf(io.BytesIO(document.document), signed, account=renewal.account, password=password,
                               otp=otp or None, credential_id=credential_id)
        except AuthenticationRefused:
            self._audit(renewal.id, "application_signing_refused", "authentication")
            raise ApplicationRefused("the password or one-time password is not right",
                                     reason="authentication") from None
        except AccountLocked:
            self._audit(renewal.id, "application_signing_refused", "account locked")
            raise ApplicationRefused("the account is locked after too many wrong passwords; try again later "
                                     "or unlock it in person", reason="locked") from None
        except PermissionRefused as exc:
            raise CoreUnavailable(f"the core does not let the RA sign for this account: {exc}") from None
        except SignServerClientError as exc:
            raise core_error(exc, message=f"the document service refused to sign: {exc.message}") from None
        signed_bytes = signed.getvalue()
        if not signed_bytes.startswith(document.document):  # the core appends its signature, never rewrites
            raise StepRefused("the signed document is not the application document")
        return signed_bytes

    def _claim_signing(self, renewal_id: str) -> Renewal:
        """The renewal with its application's signing claimed for this request (SIGNING_CLAIM),
        written through the renewal's version: of requests sent at once, whatever the RA process,
        one claims it and the others find it claimed.

        Raises: RenewalNotFound; StepRefused: a signing is under way ("application_signing"), or
                the renewal no longer awaits its application ("out_of_order").
        """
        def claim(r, now, conn):
            return machine.start_application_signing(r, now + SIGNING_CLAIM, now)
        try:
            return self._step(renewal_id, HOLDER, "application_signing_started", claim)
        except ConcurrentUpdate:  # written meanwhile (PostgreSQL: another claim, say): read it again
            return self._step(renewal_id, HOLDER, "application_signing_started", claim)

    def _signing_ended(self, claimed: Renewal) -> None:
        """Give back the claim ``claimed`` holds; left alone when it lapsed and another request
        claimed the signing since, or the renewal moved on. Raises nothing: the holder is told why
        the signing failed, and a claim the RA's database did not take back lapses at its time."""
        now = self._clock.now()
        try:
            with self._database.transaction() as conn:
                current = repository.get_renewal(conn, claimed.id, for_update=True)
                if current.application_signing_until == claimed.application_signing_until:
                    repository.save_renewal(conn, machine.application_signing_ended(current, now))
                    repository.audit(conn, now, HOLDER, "application_signing_ended", claimed.id,
                                     "no signature recorded")
        except RaError as exc:
            log.warning("a renewal's application signing was not given back (%s); it lapses at %s",
                        type(exc).__name__, claimed.application_signing_until.isoformat())

    def upload_application(self, renewal_id: str, signed_pdf: bytes) -> Renewal:
        """Accept the application signed with an external eID.

        Raises: RenewalNotFound; StepRefused: out of order, or a signing through the core under way
                ("application_signing"); ApplicationRefused: not the RA's document, a signature that
                is not intact and valid or does not cover it, changed after signing, a signer not
                under a configured trust root or not the holder; CoreUnavailable.
        """
        from signserver.client import InvalidArgument, SignServerClientError

        renewal = self.get(renewal_id)
        machine.before_application(renewal)
        if machine.application_signing(renewal, self._clock.now()):  # through the core: one signature at a time
            raise StepRefused("the application is being signed with the cloud-signature credential",
                              reason=machine.APPLICATION_SIGNING)
        document = self.application_document(renewal_id)
        roots = self._trust_roots()
        if not signed_pdf.startswith(document.document) or len(signed_pdf) == len(document.document):
            raise ApplicationRefused("the upload is not the application document generated for this renewal, "
                                     "signed: sign the document as downloaded, without changing it")
        try:
            verification = self._require_documents().verify_pdf(io.BytesIO(signed_pdf))
        except InvalidArgument as exc:
            raise ApplicationRefused(f"the upload is not a readable signed PDF: {exc}") from None
        except SignServerClientError as exc:
            raise core_error(exc, ApplicationRefused,
                             f"the document service could not verify the upload: {exc.message}") from None
        holder = self._holder(renewal.account)
        signer = check_upload(signed_pdf, len(document.document), verification, roots, holder.name,
                              self._clock.now())
        return self._application_signed(renewal, document, signed_pdf, UPLOAD, signer)

    def _application_signed(self, renewal: Renewal, document: ApplicationRecord, signed: bytes, signed_with: str,
                            signer: str) -> Renewal:
        digest = hashlib.sha256(signed).hexdigest()

        def record(r, now, conn):
            repository.save_application(conn, replace(document, signed_document=signed, signed_sha256=digest,
                                                      signed_at=now, signed_with=signed_with, signer=signer))
            return machine.application_signed(r, digest, now)
        return self._save(renewal, HOLDER, "application_signed", record,
                          detail=f"sha256={digest} with={signed_with} signer={signer[:200]}")

    def _require_documents(self):
        if self._documents is None:
            raise CoreUnavailable("the RA is not set up as an application of the core (ra.application_client_cert)")
        return self._documents

    def _trust_roots(self) -> list:
        """Raises: SettingsError: a root file cannot be read or holds no certificate."""
        from cryptography import x509

        roots = []
        for path in self._settings.application_trust_roots:
            try:
                roots += x509.load_pem_x509_certificates(Path(path).read_bytes())
            except (OSError, ValueError):
                raise SettingsError(f"ra.application_trust_roots: cannot read certificates from {path}") from None
        return roots

    def _audit(self, renewal_id: str, action: str, detail: str) -> None:
        now = self._clock.now()
        with self._database.transaction() as conn:
            repository.audit(conn, now, HOLDER, action, renewal_id, detail)


def subject_parts(certificate_der: bytes) -> tuple[str, str, str]:
    """The organisation, department and title in a certificate's subject ("" where absent)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    if not certificate_der:
        return "", "", ""
    try:
        subject = x509.load_der_x509_certificate(certificate_der).subject
    except ValueError:
        return "", "", ""

    def first(oid) -> str:
        values = subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else ""
    return first(NameOID.ORGANIZATION_NAME), first(NameOID.ORGANIZATIONAL_UNIT_NAME), first(NameOID.TITLE)


def check_upload(signed_pdf: bytes, document_length: int, verification, roots: list, holder_name: str,
                 now: datetime.datetime) -> str:
    """Check an uploaded application against the core's ``verification`` of it; returns the
    signer's subject. The upload is known to start with the RA's document (``document_length``
    bytes).

    A signature counts when its signed range covers the whole RA document (its ByteRange starts
    at 0 and its /Contents gap lies after the document) and it was added in the revision right
    after the document (no update before it), the core finds it intact and valid and
    nothing changed after it but what signing allows, and its certificate chains to ``roots``
    and names the holder.

    Each signature is paired with its report by a name no other signature field bears, and the
    report must name the signer of the certificate checked here and the digest of the signature's
    /Contents (see _paired_reports).

    Raises: ApplicationRefused (the message says which check failed).
    """
    from pyhanko.pdf_utils.misc import PdfError
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.fields import enumerate_sig_fields

    if not roots:
        raise ApplicationRefused("no trust roots are configured for signed uploads; sign with the "
                                 "cloud-signature credential instead")
    try:
        reader = PdfFileReader(io.BytesIO(signed_pdf), strict=False)
        embedded = reader.embedded_signatures
        field_names = [str(name) for name, _, _ in enumerate_sig_fields(reader)]  # filled or not
        document_revisions = PdfFileReader(io.BytesIO(signed_pdf[:document_length]), strict=False).xrefs.total_revisions
    except (PdfError, ValueError, KeyError, TypeError) as exc:
        raise ApplicationRefused(f"the upload is not a readable PDF ({type(exc).__name__})") from None
    reports = _paired_reports(embedded, field_names, verification.signatures)
    covering = [s for s in embedded if id(s) in reports and _covers(s, document_length)]
    if not covering:
        raise ApplicationRefused("no signature covers the whole application document")
    # Signed in the revision right after the RA's document: an update slipped in before the
    # signature could change what the page shows while the bytes still begin with the document.
    covering = [s for s in covering if s.signed_revision == document_revisions]
    if not covering:
        raise ApplicationRefused("the application document was changed before it was signed")
    reasons = []
    for signature in covering:
        report = reports[id(signature)]
        if not (report.intact and report.valid):
            reasons.append("the signature is not intact and valid")
            continue
        if report.modified_after_signing and not report.modification_allowed:
            reasons.append("the document was changed after it was signed")
            continue
        certificate = signature.signer_cert
        if not _chains_to(certificate, list(signature.other_embedded_certs), roots, now):
            reasons.append("the signer's certificate does not chain to a trusted root")
            continue
        if not _names_holder(certificate, holder_name):
            reasons.append("the signer's certificate does not name the holder")
            continue
        return certificate.subject.human_friendly
    raise ApplicationRefused("the signed application is refused: " + "; ".join(dict.fromkeys(reasons)))


def _paired_reports(embedded: list, field_names: list[str], reports) -> dict[int, object]:
    """Each signature of the upload (a document time-stamp is not reported) with the core's report
    of it, keyed by id(signature).

    A report names its signature's field, and the digest of its /Contents: a name two signature
    fields share (the earlier one's report would stand for the later, or the reverse) is refused,
    as is any signature without exactly one report, a report of no signature, a report whose
    signer is not the subject of the certificate the signature carries, and one of other
    /Contents: the report checked must be the signature's own, whatever the core or the two
    parsers make of an odd document.

    Raises: ApplicationRefused: "not a signed application the RA can check".
    """
    from pyhanko.pdf_utils.misc import PdfError

    def refuse(why: str):
        return ApplicationRefused(f"the upload is not a signed application the RA can check: {why}")

    if len(set(field_names)) != len(field_names):
        raise refuse("two of its signature fields have the same name")
    signatures = [s for s in embedded if s.sig_object.get("/Type") != DOCUMENT_TIMESTAMP]
    names = [str(s.field_name) for s in signatures]
    reported = [report.field for report in reports]
    if len(set(names)) != len(names) or sorted(reported) != sorted(names):
        raise refuse("the document service's verification does not report each of its signatures exactly once")
    by_name = {report.field: report for report in reports}
    paired = {}
    for signature, name in zip(signatures, names):
        report = by_name[name]
        try:
            signer = signature.signer_cert.subject.human_friendly
        except (PdfError, ValueError, KeyError, TypeError):  # a CMS pyHanko cannot read
            raise refuse(f"the signature in field {name!r} cannot be read") from None
        if report.signer != signer:
            raise refuse(f"the document service's report of field {name!r} is about another signer")
        # The report names its signature by the digest of its /Contents too (a core too old to
        # send one leaves it empty: the name and the signer then pair them).
        if report.contents_sha256 and report.contents_sha256 != hashlib.sha256(signature.pkcs7_content).digest():
            raise refuse(f"the document service's report of field {name!r} is about another signature")
        paired[id(signature)] = report
    return paired


def _covers(signature, document_length: int) -> bool:
    try:
        start, gap_start, gap_end, tail = (int(n) for n in signature.sig_object["/ByteRange"])
    except (KeyError, TypeError, ValueError):
        return False
    return start == 0 and gap_start >= document_length and gap_end + tail > document_length


def _chains_to(certificate, others: list, roots: list, now: datetime.datetime) -> bool:
    """Whether ``certificate`` has a valid path at ``now`` to one of ``roots`` (pyHanko's
    certificate validator; no fetching: revocation is checked where the document carries it)."""
    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.errors import PathBuildingError, PathValidationError, ValidationError

    trusted = [asn1_x509.Certificate.load(root.public_bytes(Encoding.DER)) for root in roots]
    context = ValidationContext(trust_roots=trusted, other_certs=others, allow_fetching=False,
                                revocation_mode="soft-fail", moment=now)
    validator = CertificateValidator(certificate, intermediate_certs=others, validation_context=context)
    try:
        asyncio.run(validator.async_validate_usage(set()))
    except (PathBuildingError, PathValidationError, ValidationError):
        return False
    return True


def _names_holder(certificate, holder_name: str) -> bool:
    """The certificate's common name (or given name and surname) are the holder's registered name,
    whatever the order of the words and the case."""
    subject = certificate.subject.native

    def words(text: str) -> list[str]:
        return sorted(text.casefold().split())
    candidates = [subject.get("common_name", ""), f"{subject.get('given_name', '')} {subject.get('surname', '')}"]
    return any(candidate.strip() and words(candidate) == words(holder_name) for candidate in candidates)
