"""PadesService: PAdES signing with a holder's credential, verification, and the TSA."""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko_certvalidator import ValidationContext

from signserver.accounts.model import Application, Credential
from signserver.audit.log import AuditLog
from signserver.ca.authority import CertificateAuthority
from signserver.ca.revocation import stored_crl
from signserver.clock import Clock
from signserver.config import PadesConfig
from signserver.errors import CredentialUnusable, PermissionDenied
from signserver.hsm.algorithms import HashAlgorithm
from signserver.hsm.keystore import HsmKeyStore
from signserver.pades.cms_signer import HsmCmsSigner, SignDigest, to_asn1
from signserver.pades.document import PadesLevel, PreparedDocument, SigningJob, finish_prepared, prepare_document
from signserver.pades.pending import PendingDocument, PreparedDocuments
from signserver.pades.preparation import PreparationCache, PreparationKey
from signserver.pades.font import stamp_font
from signserver.pades.signable import check_signable
from signserver.pades.stamp import StampOptions
from signserver.pades.tsa import InProcessTimeStamper, RemoteTimeStamper, TimeStampAuthority
from signserver.pades.verification import DocumentVerdict, TrustMaterial, VerificationLimits, verify_stream
from signserver.secret import Secret
from signserver.signing.credential_directory import CredentialDirectory
from signserver.signing.hash_signer import HashSigner
from signserver.store.database import Database

log = logging.getLogger(__name__)

DEFAULT_STAMP = StampOptions()  # frozen, so one shared default is safe


@dataclass(frozen=True)
class ReadyToSign:
    """A document prepared for signing (PadesService.prepare_signing), waiting for its token."""

    credential: Credential
    job: SigningJob
    prepared: PreparedDocument
    destination: BinaryIO
    start: int  # where the document begins in ``destination``
    level: PadesLevel


class PadesService:
    def __init__(self, database: Database, keys: HsmKeyStore, ca: CertificateAuthority, signer: HashSigner,
                 credentials: CredentialDirectory, audit: AuditLog, clock: Clock, state_dir: Path,
                 config: PadesConfig):
        self._database = database
        self._keys = keys
        self._ca = ca
        self._hash_signer = signer
        self._credentials = credentials
        self._audit = audit
        self._clock = clock
        self._state_dir = state_dir
        self._prepared = PreparedDocuments(database, clock, config.spool_dir or state_dir / "prepared",
                                           signer.token_lifetime)
        self.tsa = TimeStampAuthority(keys, ca, clock)
        self.config = config
        self._preparations = PreparationCache()
        self._timestampers: dict[str, TimeStamper] = {}

    def default_stamp(self) -> StampOptions:
        """The configured caption and time zone, the rest as StampOptions has them."""
        return StampOptions(caption=self.config.caption, time_zone=self.config.time_zone)

    def default_level(self) -> PadesLevel:
        return PadesLevel.parse(self.config.level)

    def timestamper(self) -> tuple[str, TimeStamper]:
        """The configured external TSA, else the built-in one, with a name for it.

        One TimeStamper is kept per TSA (per certificate of the built-in one): pyHanko asks each
        new TimeStamper for a trial token to learn the TSA's certificates and token size.
        """
        if self.config.tsa_url:
            name = self.config.tsa_url
        else:
            name = "built-in:" + self.tsa.certificate().fingerprint(hashes.SHA256()).hex()
        timestamper = self._timestampers.get(name)
        if timestamper is None:
            timestamper = RemoteTimeStamper(name) if self.config.tsa_url else InProcessTimeStamper(self.tsa)
            self._timestampers[name] = timestamper
        return name, timestamper

    def font(self) -> Path:
        """Raises: ConfigurationError: the CJK fonts are not installed."""
        return stamp_font(self._state_dir)

    def _crls(self) -> list[bytes]:
        with self._database.read() as conn:
            return [row.der for name in ("issuing", "root") if (row := stored_crl(conn, name)) is not None]

    def _validation_context(self, crls: list[bytes], chain: list[x509.Certificate]) -> ValidationContext:
        """For the revocation data a long-term signature embeds: checked at the service's time,
        at which the CA issued its certificates and CRLs."""
        issuing, root = chain
        roots = [to_asn1(root), *self._extra_roots()]
        return ValidationContext(trust_roots=roots, other_certs=[to_asn1(issuing)], crls=crls, allow_fetching=False,
                                 moment=self._clock.now())

    def _extra_roots(self) -> list:
        if self.config.trust_roots is None:
            return []
        return [to_asn1(c) for c in x509.load_pem_x509_certificates(self.config.trust_roots.read_bytes())]

    def sign_pdf(self, application: Application, username: str, password: Secret, otp_code: str | None,
                 credential_id: str, source: BinaryIO, destination: BinaryIO,
                 level: PadesLevel = PadesLevel.B_LT, stamp: StampOptions = DEFAULT_STAMP) -> bytes:
        """The one-call flow: check the holder's factors for this document, then sign it with the
        credential. Returns the SHA-256 of the signed document.

        Raises: as HashSigner.authorize and prepare_document; CredentialUnusable (no certificate);
            InvalidArgument: the document or the stamp cannot be signed as asked, found before the
            factors are checked (all but the stamp's text: see check_signable).
        """
        if not application.one_call_signing:
            raise PermissionDenied(f"application {application.name!r} may only use the two-step flow "
                                   "(PrepareSignature, Authorize, CompleteSignature)")
        # Refused only once it is signed, after the factors are checked, a bad document or option
        # would cost the holder this OTP.
        check_signable(source, stamp, None, self.font(), self._clock.now(), level)
        digest = _sha256_of(source)
        # The same checks as the two-step flow: factors, lockout, credential ownership; then the
        # document is prepared, and only then the activation token for it spent.
        authorization = self._hash_signer.authorize(application, username, password, otp_code, credential_id,
                                                    HashAlgorithm.SHA256, [digest])
        ready = self.prepare_signing(application, authorization.credential_id, source, destination, level, stamp)
        spent = self._hash_signer.spend(application, authorization.credential_id, Secret(authorization.token),
                                        HashAlgorithm.SHA256, [digest])
        with self._hash_signer.signing(spent) as sign:
            return self.finish_signing(application, ready, sign, document_digest=digest)

    def prepare_signing(self, application: Application, credential_id: str, source: BinaryIO,
                        destination: BinaryIO, level: PadesLevel, stamp: StampOptions) -> ReadyToSign:
        """Write ``source`` to ``destination`` with the signature's place (and the stamp) and its
        digest computed, before an activation token is spent on the document: whatever of the
        client's input signing refuses (the document, the field, the stamp's text and box) is
        refused here, with nothing spent. :meth:`finish_signing` signs it.

        Raises: NotFound, CredentialUnusable, InvalidArgument (as prepare_document).
        """
        credential, job = self._job(application, credential_id, level, stamp)
        source.seek(0)
        start = destination.tell()
        return ReadyToSign(credential, job, prepare_document(source, destination, job), destination, start, level)

    def finish_signing(self, application: Application, ready: ReadyToSign, sign: SignDigest,
                       document_digest: bytes) -> bytes:
        """Sign a document :meth:`prepare_signing` prepared, once the token was spent on its SHA-256
        (``document_digest``), with ``sign`` (of HashSigner.signing). Returns the SHA-256 of the
        signed document.

        Raises: InvalidArgument (a pyHanko refusal), HsmError, StoreUnavailable.
        """
        ready.job.signer.bind(sign)
        ready.prepared.finish()
        return self._finish_audit(application, ready.credential, ready.destination, ready.start, document_digest,
                                  ready.level)

    # --- the two-step flow: prepare, the holder authorises the digest, complete ---------------

    def prepare_pdf(self, application: Application, credential_id: str, source: BinaryIO,
                    level: PadesLevel = PadesLevel.B_LT, stamp: StampOptions = DEFAULT_STAMP) -> PendingDocument:
        """Place the signature (and stamp) and return the digest the holder must authorise with
        SigningService.Authorize; :meth:`complete_pdf` finishes, in any worker of any node sharing
        this database and spool directory, within the token's lifetime.

        Raises: NotFound, CredentialUnusable, InvalidArgument, StoreUnavailable.
        """
        credential, job = self._job(application, credential_id, level, stamp)

        def write(output: BinaryIO):
            source.seek(0)
            return prepare_document(source, output, job).signature()

        return self._prepared.add(application.id, credential.id, job.preparation_key.certificate_sha256, level, write)

    def complete_pdf(self, application: Application, document_id: str, token: Secret,
                     destination: BinaryIO) -> bytes:
        """Spend the activation token on the prepared document's digest and sign it. The document
        is taken (once: a second call, or one racing this, gets NotFound) whether or not it is
        then signed.

        Raises: NotFound (unknown, expired or already taken), CredentialUnusable (the credential's
        certificate changed since the document was prepared: prepare it again), ActivationRefused,
        InvalidArgument, HsmError, StoreUnavailable, DataCorrupted.
        """
        taken = self._prepared.take(document_id, application.id)
        try:
            certificate = self._ca.signing_certificate(taken.credential_id)
            if certificate is None or certificate.fingerprint(hashes.SHA256()) != taken.certificate_sha256:
                raise CredentialUnusable(f"the certificate of credential {taken.credential_id} changed since the "
                                         "document was prepared; prepare it again")
            spent = self._hash_signer.spend(application, taken.credential_id, token, HashAlgorithm.SHA256,
                                            [taken.signature.document_digest])
            credential = spent.credential
            with self._hash_signer.signing(spent) as sign:
                chain = self._ca.chain()
                signer = HsmCmsSigner(credential.key_algorithm, certificate, chain, sign)
                timestamper = self.timestamper()[1] if taken.level.timestamped else None
                context = self._validation_context(self._crls(), chain) if taken.level.long_term else None
                finish_prepared(taken.file, taken.signature, signer, timestamper, context, self._clock.now())
            taken.file.seek(0)
            start = destination.tell()
            shutil.copyfileobj(taken.file, destination, 1 << 20)
            return self._finish_audit(application, credential, destination, start, taken.signature.document_digest,
                                      taken.level)
        finally:
            self._prepared.discard(taken)

    def remove_expired_documents(self) -> int:
        """Remove prepared documents past their lifetime, with their files, and spool files that no
        document names (background work). Returns how many went. Raises: StoreUnavailable."""
        return self._prepared.remove_expired()

    def _job(self, application: Application, credential_id: str, level: PadesLevel, stamp: StampOptions):
        credential = self._credentials.credential(application, credential_id)
        if not credential.is_package:
            self._credentials.refuse_infrastructure_key(credential)
        certificate = self._ca.signing_certificate(credential.id)
        if certificate is None:
            raise CredentialUnusable(f"credential {credential_id} has no certificate yet; the RA must issue one")
        tsa_name, timestamper = self.timestamper() if level.timestamped else ("", None)
        crls = self._crls() if level.long_term else []
        chain = self._ca.chain()
        job = SigningJob(
            signer=HsmCmsSigner(credential.key_algorithm, certificate, chain),
            holder_name=self._credentials.holder_name(credential), level=level, stamp=stamp, font=self.font(),
            timestamper=timestamper,
            validation_context=self._validation_context(crls, chain) if level.long_term else None,
            now=self._clock.now(), preparation=self._preparations,
            preparation_key=PreparationKey(certificate_sha256=certificate.fingerprint(hashes.SHA256()),
                                           level=level.value, timestamper=tsa_name,
                                           revocation_sha256=hashlib.sha256(b"".join(crls)).digest()))
        return credential, job

    def _finish_audit(self, application, credential, destination: BinaryIO, start: int, document_digest: bytes,
                      level: PadesLevel) -> bytes:
        destination.seek(start)
        signed_digest = _sha256_of(destination)
        with self._database.transaction() as conn:
            self._audit.append(conn, self._clock.now(), "signature.pdf", f"application:{application.name}",
                               credential.username, credential=credential.id, document=document_digest.hex(),
                               signed=signed_digest.hex(), level=level.value)
        return signed_digest

    def trust_material(self) -> TrustMaterial:
        """What verification trusts, as plain bytes a child process can take: this CA's root (and
        the configured extra roots), its issuing certificate, and its stored CRLs; verified at the
        service's time."""
        issuing, root = self._ca.chain()
        return TrustMaterial(roots=(root.public_bytes(Encoding.DER), *(c.dump() for c in self._extra_roots())),
                             intermediates=(issuing.public_bytes(Encoding.DER),), crls=tuple(self._crls()),
                             moment=self._clock.now())

    def verification_limits(self) -> VerificationLimits:
        """How much work verifying one document may take (the defaults, generous for real documents)."""
        return VerificationLimits()

    def verify_pdf(self, source: BinaryIO, limits: VerificationLimits | None = None) -> DocumentVerdict:
        """Verify in this process (the CLI, tests); servers verify in a child process instead.

        Raises: InvalidArgument: not a readable PDF, damaged, or over a verification limit.
        """
        return verify_stream(source, self.trust_material(), limits or self.verification_limits())


def _sha256_of(stream: BinaryIO) -> bytes:
    stream.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        digest.update(chunk)
    stream.seek(0)
    return digest.digest()

