"""IssuingRecertification: a new certificate for the issuing CA's same key and subject, so that the
issuing CA outlives its first certificate's ten years (holder certificates never outlast it, and
once it ends nothing can be issued). What the issuing CA signed before, holder certificates,
CRLs, the OCSP responder's and TSA's certificates, names it by subject and key identifier, both
kept: it verifies under the new certificate as under the old one.

The root signs the new certificate when its key is in this HSM; under an external root the
operator has the root sign one (:meth:`IssuingRecertification.request` gives the request), which is
installed once it passes the checks ``ca init --issuing-cert`` makes, and is for the same key and
subject.
"""

from __future__ import annotations

import logging

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from signserver.audit.log import AuditLog
from signserver.ca import repository as repo
from signserver.ca.setup import (
    CLOCK_SKEW,
    ISSUING,
    ROOT,
    check_issuing_certificate,
    issuing_certificate,
    issuing_csr,
    load_certificate,
)
from signserver.clock import Clock
from signserver.config import CaConfig
from signserver.errors import CertificateRefused, InvalidArgument, NotFound
from signserver.hsm.crypto_keys import hsm_private_key
from signserver.hsm.keystore import HsmKeyStore
from signserver.store.database import Database

log = logging.getLogger(__name__)


class IssuingRecertification:
    def __init__(self, database: Database, keys: HsmKeyStore, audit: AuditLog, clock: Clock, config: CaConfig):
        self._database = database
        self._keys = keys
        self._audit = audit
        self._clock = clock
        self._config = config

    def request(self) -> x509.CertificateSigningRequest:
        """A request for the issuing CA's key and subject (signed by that key in the HSM), for an
        external root to sign a new certificate with.

        Raises: NotFound (the CA is not set up), HsmError.
        """
        _, issuing = self._authorities()
        return issuing_csr(hsm_private_key(self._keys, issuing.key_id), issuing.certificate.subject)

    def recertify(self, operator: str, issuing_der: bytes | None = None) -> x509.Certificate:
        """Give the issuing CA a new certificate for its key and subject and return it. With this
        CA's own root, the root signs it: a new serial, from now (less the clock skew) for
        ISSUING_DAYS or until the root's end if sooner, the extensions of the issuing CA's
        certificate (authority information access with caIssuers included). Under an external root,
        ``issuing_der`` (PEM or DER) is that root's new certificate for the issuing CA, installed
        once checked. The certificate and the audit record ``ca.issuing_recertified`` commit together.

        Raises:
            NotFound: the CA is not set up.
            InvalidArgument: under an external root, no certificate given, or one that is not a
                certificate, not for the issuing CA's key or subject, not signed by the root, not a
                CA's, without keyCertSign and cRLSign, ended or not yet begun; with this CA's own
                root, a certificate given (the root signs it here).
            CertificateRefused: this CA's own root has ended.
            HsmError, StoreUnavailable.
        """
        root, issuing = self._authorities()
        now = self._clock.now()
        if root.key_id:
            if issuing_der is not None:
                raise InvalidArgument("the root's key is in this HSM: the root signs the issuing CA's new certificate "
                                      "here; a certificate from outside (--issuing-cert) is for an external root")
            if now >= root.certificate.not_valid_after_utc:
                ended = root.certificate.not_valid_after_utc
                raise CertificateRefused(f"the root's certificate ended on {ended:%Y-%m-%d %H:%M} UTC: it can certify "
                                         "the issuing CA no more")
            new = issuing_certificate(self._config, issuing.certificate.subject, self._keys.public_key(issuing.key_id),
                                      root.certificate, hsm_private_key(self._keys, root.key_id),
                                      x509.random_serial_number(), now - CLOCK_SKEW)
        else:
            new = self._external(issuing, root.certificate, issuing_der, now)
        if new == issuing.certificate:
            return new  # installed already (a command run again)
        with self._database.transaction() as conn:
            repo.put_authority(conn, ISSUING, issuing.key_id, new.public_bytes(Encoding.DER), now)
            self._audit.append(conn, now, "ca.issuing_recertified", operator, "ca",
                               issuing=format(new.serial_number, "x"),
                               previous=format(issuing.certificate.serial_number, "x"),
                               not_after=new.not_valid_after_utc.isoformat())
        log.info("the issuing CA has a new certificate %x, until %s (replacing %x, which ends on %s)",
                 new.serial_number, new.not_valid_after_utc.date(), issuing.certificate.serial_number,
                 issuing.certificate.not_valid_after_utc.date())
        return new

    def _external(self, issuing: repo.Authority, root: x509.Certificate, issuing_der: bytes | None,
                  now) -> x509.Certificate:
        """The external root's new certificate for the issuing CA, checked. Raises: InvalidArgument."""
        subject = issuing.certificate.subject.rfc4514_string()
        if issuing_der is None:
            raise InvalidArgument(
                f"the root's key is not in this HSM (an external root): have the root sign a new certificate for the "
                f"issuing CA's key and subject ({subject}) and give it with --issuing-cert FILE "
                "(`signserver ca recertify-issuing --csr-out FILE` writes the request)")
        try:
            new = load_certificate(issuing_der)
        except ValueError:
            raise InvalidArgument("the issuing certificate must be X.509 (PEM or DER)") from None
        if new.public_key() != self._keys.public_key(issuing.key_id):
            raise InvalidArgument("the certificate is not for the issuing CA's key: what the issuing CA signed "
                                  "would not verify under it")
        if new.subject != issuing.certificate.subject:
            raise InvalidArgument(f"the certificate's subject ({new.subject.rfc4514_string()}) is not the issuing "
                                  f"CA's ({subject}): what the issuing CA signed names its issuer so")
        try:
            new.verify_directly_issued_by(root)
        except Exception as exc:  # cryptography raises several kinds here
            raise InvalidArgument(f"the issuing certificate is not signed by the root "
                                  f"({root.subject.rfc4514_string()}): {exc}") from None
        check_issuing_certificate(new, now)
        return new

    def _authorities(self) -> tuple[repo.Authority, repo.Authority]:
        """The root and the issuing CA, both with their certificates. Raises: NotFound."""
        with self._database.read() as conn:
            root, issuing = repo.get_authority(conn, ROOT), repo.get_authority(conn, ISSUING)
        if root is None or root.certificate is None or issuing is None or issuing.certificate is None:
            raise NotFound("the CA is not initialised; run `signserver ca init`")
        return root, issuing
