"""Which credentials an application may see and use, and what it may learn of them.

An application sees the credentials of the accounts its policy covers, and no other: another
account's credential does not exist for it (NotFound), usable or not. The list of an account's
credentials is shown only to an application whose policy names the account (the operator told it
about the account) or with an activation token the holder's factors produced: what an application
learns about an account it names, without the holder's factors, never tells a known name from an
unknown one. A credential may sign while it is active and, once certified, its newest certificate
is valid and unexpired.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import bindparam, select

from signserver.accounts.applications import ApplicationRegistry
from signserver.accounts.model import Application, Credential
from signserver.accounts.packages import SigningPackages
from signserver.accounts.repository import (
    CREDENTIAL_COLUMNS,
    credential_from_row,
    credentials_of,
    credentials_of_name,
    get_account,
    get_credential,
)
from signserver.clock import Clock, epoch_seconds
from signserver.errors import CredentialUnusable, InvalidArgument, NotFound, PermissionDenied
from signserver.hsm.algorithms import SignatureAlgorithm
from signserver.hsm.keystore import HsmKeyStore
from signserver.secret import Secret
from signserver.signing import activation
from signserver.store.database import Database
from signserver.store.prepared import PreparedStatement
from signserver.store.schema import accounts, activation_tokens, certificates, credentials

log = logging.getLogger(__name__)

# Labels of the keys the server makes for itself: the CA's ("ca-root-", "ca-issuing-",
# "ca-ocsp-responder-", "ca-tsa-" in signserver/ca/authority.py) and the audit seal's
# ("signserver-audit-seal" and its successors in signserver/audit/seal.py).
INFRASTRUCTURE_LABEL_PREFIXES = ("ca-", "signserver-")

LISTING_REFUSED = ("the credentials of an account are listed only to an application whose policy names the "
                   "account, or with an activation token the holder's factors produced for it; Authorize "
                   "with an empty credential_id chooses the holder's signing credential")


@dataclass(frozen=True)
class CredentialInfo:
    credential: Credential
    public_key_der: bytes  # SubjectPublicKeyInfo
    signature_algorithms: tuple[SignatureAlgorithm, ...]


class CredentialDirectory:
    """The credentials as an application may know them (see the module's docstring)."""

    def __init__(self, database: Database, keys: HsmKeyStore, packages: SigningPackages,
                 applications: ApplicationRegistry, clock: Clock):
        self._database = database
        self._keys = keys
        self._packages = packages
        self._applications = applications
        self._clock = clock

    def list_credentials(self, application: Application, username: str) -> list[Credential]:
        """Every credential of the account, for an operator's tools (which may know which
        accounts exist); an application's request goes to :meth:`credentials_shown_to`.

        Raises: PermissionDenied, NotFound.
        """
        self._applications.check_may_serve(application, username)
        with self._database.read() as conn:
            account = get_account(conn, username, self._clock.now())
            return credentials_of(conn, account.id)

    def credentials_shown_to(self, application: Application, username: str,
                             activation_token: Secret | None = None) -> list[Credential]:
        """The account's credentials, for an application whose policy names the account, or that
        presents an unexpired, unrevoked activation token the holder's factors produced for this
        account and this application. Anyone else is refused in one way for every name, known or
        not, so the answer never says whether an account exists.

        Raises: PermissionDenied: the policy does not cover the account, or neither condition holds.
        """
        self._applications.check_may_serve(application, username)
        now = self._clock.now()
        with self._database.read() as conn:
            proven = activation_token is not None and _token_proves_factors(conn, activation_token, application,
                                                                            username, now)
            if proven or application.names(username):
                return credentials_of_name(conn, username)
        raise PermissionDenied(LISTING_REFUSED)

    def credential_info(self, application: Application, credential_id: str) -> CredentialInfo:
        """Raises: NotFound (also for a credential of an account the application may not serve)."""
        credential = self._visible(application, credential_id)
        if credential.is_package:
            public_der = self._packages.public_key_der(credential.key_id)
        else:
            public_der = self._keys.public_key(credential.key_id).public_bytes(Encoding.DER,
                                                                                PublicFormat.SubjectPublicKeyInfo)
        return CredentialInfo(
            credential=credential,
            public_key_der=public_der,
            signature_algorithms=tuple(s for s in SignatureAlgorithm if s.family == credential.key_algorithm.family),
        )

    def credential(self, application: Application, credential_id: str) -> Credential:
        """A credential the application may use, checked usable. Raises: NotFound, CredentialUnusable."""
        with self._database.read() as conn:
            return self.usable_in(application, credential_id, conn, self._clock.now())

    def refuse_infrastructure_key(self, credential: Credential) -> None:
        """Refuse a credential whose key is one the server keeps for itself (CA, OCSP, TSA, audit
        seal): only a database changed behind the server's back points a credential at one.

        Raises: CredentialUnusable (saying nothing of the key), KeyNotFound, HsmError.
        """
        label = self._keys.label_of(credential.key_id)
        if label.startswith(INFRASTRUCTURE_LABEL_PREFIXES):
            log.warning("credential %s names a key reserved for the server's own use (label %r): the "
                        "credentials table was altered; nothing is signed", credential.id, label)
            raise CredentialUnusable(f"credential {credential.id} cannot sign")

    def holder_name(self, credential: Credential) -> str:
        """The name of the credential's holder (what a stamp shows). Raises: NotFound."""
        with self._database.read() as conn:
            return get_account(conn, credential.username, self._clock.now()).holder_name

    def named(self, credential_id: str):
        """The credential of that id, whoever's it is, with the row of its newest certificate's
        serial, status and expiry (for :func:`check_usable`); or None. Read by its id alone: the
        same work whoever asks."""
        with self._database.read() as conn:
            return _credential_with_certificate(conn, credential_id)

    def signing_credential(self, account_id: int, now: datetime.datetime):
        """The account's newest active credential that may sign now, with the row of its newest
        certificate (as :meth:`named`).

        Raises: CredentialUnusable: none may (the newest active one's reason), or none is active.
        """
        with self._database.read() as conn:
            candidates = [(credential_from_row(row), row)
                          for row in conn.execute(_ACTIVE_CREDENTIALS_WITH_CERTIFICATE, {"account_id": account_id})]
        refusals = []
        for credential, newest in candidates:
            try:
                check_usable(credential, newest, now)
                return credential, newest
            except CredentialUnusable as unusable:
                refusals.append(unusable)
        raise refusals[0] if refusals else CredentialUnusable("the account has no active credential")

    def _visible(self, application: Application, credential_id: str) -> Credential:
        """Raises: InvalidArgument, NotFound."""
        _check_credential_id(credential_id)
        with self._database.read() as conn:
            return self._visible_to(application, get_credential(conn, credential_id))

    def usable_in(self, application: Application, credential_id: str, conn, now: datetime.datetime) -> Credential:
        """:meth:`credential`, read on the caller's connection (in its transaction).

        Raises: InvalidArgument, NotFound, CredentialUnusable.
        """
        return self.read_usable(conn, application, credential_id, now)[0]

    def read_usable(self, conn, application: Application, credential_id: str, now: datetime.datetime):
        """The credential with the row of its newest certificate (as :meth:`named`), read on the
        caller's connection and checked usable by the application.

        Raises: InvalidArgument, NotFound, CredentialUnusable.
        """
        _check_credential_id(credential_id)
        found = _credential_with_certificate(conn, credential_id)
        if found is None:
            raise NotFound(f"no credential {credential_id!r}")
        self.check_found(application, found, now)
        return found

    def check_found(self, application: Application, found, now: datetime.datetime) -> None:
        """Check a credential and its newest certificate's row, as read before, again.

        Raises: NotFound (others' credentials do not exist for an application, usable or not),
        CredentialUnusable."""
        self._visible_to(application, found[0])
        check_usable(*found, now)

    @staticmethod
    def _visible_to(application: Application, credential: Credential) -> Credential:
        if not application.all_accounts and credential.username not in application.accounts:
            raise NotFound(f"no credential {credential.id!r}")  # others' credentials do not exist for it
        return credential


class NewestCertificate(NamedTuple):
    """What check_usable reads of a credential's newest certificate (all None before the first)."""

    certificate_serial: str | None
    certificate_status: str | None
    certificate_not_after: int | None


def _check_credential_id(credential_id: str) -> None:
    if not credential_id or len(credential_id) > 64:
        raise InvalidArgument("a credential id is 1 to 64 characters")


# Built once: this lookup is on the way to every signature. The credential comes with its
# newest certificate's serial, status and expiry (all None before its first certificate).
_issued = certificates.alias("issued")
# Newest by issue time, then serial: the same order as spend_activation_token's (migrations 0019, 0026).
_NEWEST_SERIAL = (select(_issued.c.serial).where(_issued.c.credential_id == credentials.c.id)
                  .order_by(_issued.c.issued_at.desc(), _issued.c.serial.desc()).limit(1).correlate(credentials)
                  .scalar_subquery())
_WITH_CERTIFICATE = (
    select(*CREDENTIAL_COLUMNS, certificates.c.serial.label("certificate_serial"),
           certificates.c.status.label("certificate_status"), certificates.c.not_after.label("certificate_not_after"))
    .join(accounts, accounts.c.id == credentials.c.account_id)
    .outerjoin(certificates, certificates.c.serial == _NEWEST_SERIAL))
_CREDENTIAL_WITH_CERTIFICATE = PreparedStatement(_WITH_CERTIFICATE.where(credentials.c.id == bindparam("id")))
# The same for every active credential of an account, newest first.
_ACTIVE_CREDENTIALS_WITH_CERTIFICATE = (
    _WITH_CERTIFICATE.where(credentials.c.account_id == bindparam("account_id"), credentials.c.status == "active")
    .order_by(credentials.c.created_at.desc(), credentials.c.id))


def _token_proves_factors(conn, token: Secret, application: Application, username: str,
                          now: datetime.datetime) -> bool:
    """Whether ``token`` is an unexpired, unrevoked activation token issued to this application
    after the factors of the account of that name were checked, and that account is active (as
    spending a token requires: see activation.consume). One lookup by the token, whatever the
    name."""
    row = conn.execute(select(activation_tokens.c.application_id, activation_tokens.c.expires_at,
                              activation_tokens.c.revoked, accounts.c.username, accounts.c.status)
                       .join(accounts, accounts.c.id == activation_tokens.c.account_id)
                       .where(activation_tokens.c.token_hash == activation.token_hash(token.reveal()))).first()
    return (row is not None and not row.revoked and row.expires_at > epoch_seconds(now)
            and row.application_id == application.id and row.username == username and row.status == "active")


def _credential_with_certificate(conn, credential_id: str):
    """The credential and the row of its newest certificate's serial, status and expiry, or None."""
    row = _CREDENTIAL_WITH_CERTIFICATE.execute(conn, {"id": credential_id}).first()
    return None if row is None else (credential_from_row(row), row)


def check_usable(credential: Credential, newest, now: datetime.datetime) -> Credential:
    """The credential, if it may sign now: it is active and, once certified, its newest
    certificate (``newest``: a row with ``certificate_serial``, ``_status``, ``_not_after``)
    is valid and unexpired.

    Raises: CredentialUnusable.
    """
    if credential.status != "active":
        raise CredentialUnusable(f"credential {credential.id} is {credential.status}; it can no longer sign")
    serial = newest.certificate_serial
    if serial is None:
        return credential
    if newest.certificate_status != "valid":
        raise CredentialUnusable(f"the certificate {serial} of credential {credential.id} is revoked")
    if newest.certificate_not_after <= epoch_seconds(now):
        raise CredentialUnusable(f"the certificate {serial} of credential {credential.id} has expired")
    return credential
