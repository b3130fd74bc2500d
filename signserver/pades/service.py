"""PadesService: PAdES signing with a holder's credential, verification, and the TSA."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import BinaryIO

from pyhanko_certvalidator import ValidationContext

from signserver.accounts.model import Application
from signserver.audit.log import AuditLog
from signserver.ca.authority import CertificateAuthority
from signserver.ca.revocation import stored_crl
from signserver.clock import Clock
from signserver.errors import CredentialUnusable
from signserver.hsm.algorithms import HashAlgorithm
from signserver.hsm.keystore import HsmKeyStore
from signserver.pades.cms_signer import HsmCmsSigner, to_asn1
from signserver.pades.document import PadesLevel, SigningJob, sign_document
from signserver.pades.font import stamp_font
from signserver.pades.stamp import StampOptions
from signserver.pades.tsa import InProcessTimeStamper, TimeStampAuthority
from signserver.pades.verification import SignatureReport, verify_document
from signserver.secret import Secret
from signserver.signing.hash_signer import HashSigner
from signserver.store.database import Database

log = logging.getLogger(__name__)


class PadesService:
    def __init__(self, database: Database, keys: HsmKeyStore, ca: CertificateAuthority, signer: HashSigner,
                 audit: AuditLog, clock: Clock, state_dir: Path):
        self._database = database
        self._keys = keys
        self._ca = ca
        self._hash_signer = signer
        self._audit = audit
        self._clock = clock
        self._state_dir = state_dir
        self.tsa = TimeStampAuthority(keys, ca, clock)

    def font(self) -> Path:
        """Raises: ConfigurationError: the CJK fonts are not installed."""
        return stamp_font(self._state_dir)

    def validation_context(self) -> ValidationContext:
        """Trust in this CA, with its own revocation data (CRLs) handed over: nothing is fetched."""
        issuing, root = self._ca.chain()
        with self._database.read() as conn:
            crls = [row.der for name in ("issuing", "root") if (row := stored_crl(conn, name)) is not None]
        return ValidationContext(trust_roots=[to_asn1(root)], other_certs=[to_asn1(issuing)], crls=crls,
                                 allow_fetching=False)

    def sign_pdf(self, application: Application, username: str, password: Secret, otp_code: str | None,
                 credential_id: str, source: BinaryIO, destination: BinaryIO,
                 level: PadesLevel = PadesLevel.B_LT, stamp: StampOptions = StampOptions()) -> bytes:
        """The one-call flow: check the holder's factors for this document, then sign it with the
        credential. Returns the SHA-256 of the signed document.

        Raises: as HashSigner.authorize and sign_document; CredentialUnusable (no certificate).
        """
        digest = _sha256_of(source)
        # The same checks as the two-step flow: factors, lockout, credential ownership, then the
        # activation token for this document is spent at once.
        token = self._hash_signer.authorize(application, username, password, otp_code, credential_id,
                                            HashAlgorithm.SHA256, [digest])
        self._hash_signer.spend(application, credential_id, Secret(token.token), HashAlgorithm.SHA256, [digest])
        return self.sign_with_credential(application, credential_id, source, destination, level, stamp,
                                         document_digest=digest)

    def sign_with_credential(self, application: Application, credential_id: str, source: BinaryIO,
                             destination: BinaryIO, level: PadesLevel, stamp: StampOptions,
                             document_digest: bytes) -> bytes:
        """Sign after authorisation. Raises: CredentialUnusable, InvalidArgument, HsmError."""
        credential = self._hash_signer.credential(application, credential_id)
        certificate = self._keys.certificate(credential.key_id)
        if certificate is None:
            raise CredentialUnusable(f"credential {credential_id} has no certificate yet; the RA must issue one")
        holder = self._hash_signer.holder_name(credential)
        job = SigningJob(
            signer=HsmCmsSigner(self._keys, credential.key_id, credential.key_algorithm, certificate, self._ca.chain()),
            holder_name=holder, level=level, stamp=stamp, font=self.font(),
            timestamper=InProcessTimeStamper(self.tsa) if level.timestamped else None,
            validation_context=self.validation_context() if level.long_term else None,
            now=self._clock.now())
        source.seek(0)
        start = destination.tell()
        sign_document(source, destination, job)
        destination.seek(start)
        signed_digest = _sha256_of(destination)
        with self._database.transaction() as conn:
            self._audit.append(conn, self._clock.now(), "signature.pdf", f"application:{application.name}",
                               credential.username, credential=credential.id, document=document_digest.hex(),
                               signed=signed_digest.hex(), level=level.value)
        return signed_digest

    def verify_pdf(self, source: BinaryIO) -> list[SignatureReport]:
        """Raises: InvalidArgument."""
        return verify_document(source, self.validation_context)


def _sha256_of(stream: BinaryIO) -> bytes:
    stream.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        digest.update(chunk)
    stream.seek(0)
    return digest.digest()

