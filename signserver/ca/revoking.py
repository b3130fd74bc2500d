"""Revoking: by the operator's decision, or by the holder with the revocation phrase. A revoked
certificate's key never signs again; the CRL that lists it is signed in the revocation's transaction."""

from __future__ import annotations

import logging

from sqlalchemy import select, update

from signserver.accounts.manager import AccountManager, revoke_activation_tokens
from signserver.accounts.packages import PACKAGE
from signserver.accounts.authentication import UNKNOWN_NAME
from signserver.accounts.repository import account_row
from signserver.audit.log import AuditLog
from signserver.ca import repository as repo
from signserver.ca.repository import IssuedCertificate
from signserver.ca.revocation import check_revocation_reason
from signserver.ca.revocation_status import RevocationStatus
from signserver.clock import Clock
from signserver.errors import CertificateRefused, InvalidArgument, PermissionDenied
from signserver.secret import Secret
from signserver.store.database import Database
from signserver.store.schema import credentials

log = logging.getLogger(__name__)


class Revoker:
    def __init__(self, database: Database, accounts: AccountManager, audit: AuditLog, clock: Clock,
                 status: RevocationStatus):
        self._database = database
        self._accounts = accounts
        self._audit = audit
        self._clock = clock
        self._status = status

    def revoke(self, serial: str, reason: str, operator: str, holders_only: bool = False) -> IssuedCertificate:
        """Revoke a certificate (RFC 5280 reason); its credential can no longer authorise or sign.
        ``holders_only``: a certificate not issued to a holder (an application's or an RA's client
        certificate, a service certificate of the CA) is refused, as an RA may revoke holders'
        certificates only; the CA's operator revokes the others.

        The new CRL is signed in the same transaction: when it cannot be (HsmError), nothing is
        revoked and the call can be repeated.

        Raises: InvalidArgument (reason; not a holder's with ``holders_only``), NotFound,
            CertificateRefused (already revoked), HsmError.
        """
        try:
            check_revocation_reason(reason)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        now = self._clock.now()
        with self._database.transaction() as conn:
            issued = repo.get_certificate(conn, serial, now)
            if holders_only and issued.account is None:
                raise InvalidArgument(f"certificate {issued.serial} was not issued to a holder: the CA's operator "
                                      "revokes it (`signserver ca revoke`)")
            if not repo.mark_revoked(conn, issued.serial, reason, now):
                raise CertificateRefused(f"certificate {issued.serial} is already revoked")
            if issued.credential_id:
                conn.execute(update(credentials).where(credentials.c.id == issued.credential_id)
                             .values(status="revoked"))
                package = conn.execute(select(credentials.c.key_id).where(credentials.c.id == issued.credential_id,
                                                                          credentials.c.key_store == PACKAGE)).scalar()
                if package is not None:
                    self._accounts.packages.destroy(conn, package)  # a revoked key never signs again
                row = account_row(conn, issued.account) if issued.account else None
                if row is not None:
                    revoke_activation_tokens(conn, row.id)
            self._audit.append(conn, now, "certificate.revoked", operator, issued.account or "ca",
                               serial=issued.serial, reason=reason)
            self._status.publish_issuing_crl(conn)  # with the revocation, or neither
            issued = repo.get_certificate(conn, issued.serial, now)
        log.info("revoked certificate %s (%s)", issued.serial, reason)
        return issued

    def revoke_by_holder(self, serial: str, username: str, phrase: Secret, reason: str = "unspecified") -> IssuedCertificate:
        """The holder revokes their own certificate with the revocation phrase. A wrong phrase is
        refused and counts toward nothing else (no lockout).

        Raises: PermissionDenied (not theirs, or wrong phrase), NotFound, InvalidArgument.
        """
        with self._database.read() as conn:
            issued = repo.get_certificate(conn, serial, self._clock.now())
        if issued.account != username or not self._accounts.check_revocation_phrase(username, phrase):
            with self._database.transaction() as conn:
                # A name no account has is not kept as typed (it may be a password typed in the
                # wrong field), as the sign-in's records do not keep one.
                subject = username if account_row(conn, username) is not None else UNKNOWN_NAME
                self._audit.append(conn, self._clock.now(), "certificate.revocation_refused", f"holder:{subject}",
                                   subject, serial=issued.serial)
            raise PermissionDenied("the revocation phrase is not right for this certificate")
        return self.revoke(serial, reason, operator=f"holder:{username}")
