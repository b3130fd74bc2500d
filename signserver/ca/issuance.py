"""Issuance: holder certificates (new, renewed, with the holder's activation) and the server's own
service certificates, signed by the issuing CA whose key is in the HSM."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from sqlalchemy import Connection, select

from signserver.accounts.manager import AccountManager
from signserver.accounts.model import Account, AccountKind, Credential
from signserver.accounts.packages import PACKAGE, account_seal, insert_package
from signserver.accounts.passwords import check_password_rules, check_revocation_phrase
from signserver.accounts.repository import account_row, credentials_of, get_credential, insert_credential
from signserver.audit.log import AuditLog
from signserver.ca import repository as repo
from signserver.ca.builder import (
    ROLE,
    SubjectData,
    ascii_mailbox,
    check_public_key,
    end_entity_certificate,
    load_csr,
    transaction_limit_of,
)
from signserver.ca.profiles import KeySource, Profile
from signserver.ca.repository import IssuedCertificate
from signserver.ca.setup import CLOCK_SKEW, ISSUING
from signserver.clock import Clock
from signserver.config import CaConfig
from signserver.errors import AlreadyRenewed, CertificateRefused, InvalidArgument, NotFound, StoreConflict
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.hsm.crypto_keys import hsm_private_key
from signserver.hsm.keystore import HsmKeyStore
from signserver.secret import Secret
from signserver.store.database import Database
from signserver.store.schema import certificates

log = logging.getLogger(__name__)

# Account names made under the first rule may hold '_' and '@', which the subject's serialNumber,
# a PrintableString, cannot: a certificate carries ':' and '/' in their place, characters no
# account name has, so an account keeps its name and no two accounts share a serialNumber.
_EARLIER_NAME_CHARACTERS = str.maketrans({"_": ":", "@": "/"})


def certified_account_name(username: str) -> str:
    """The account name as a certificate's subject carries it (its serialNumber): the name itself,
    or for a name made under the first rule, with ':' for '_' and '/' for '@'."""
    return username.translate(_EARLIER_NAME_CHARACTERS)


@dataclass(frozen=True)
class HolderActivation:
    """What the holder gives at the online activation of a renewed cloud-signature certificate:
    the current password, or a new one when the account holds no valid certificate, and the
    revocation phrase of the new certificate. A renewal without it is the operator's alone."""

    holder_password: Secret | None = None
    new_password: Secret | None = None
    revocation_phrase: Secret | None = None

    @property
    def by_holder(self) -> bool:
        """Whether the request is the holder's activation (it sets a phrase or a password)."""
        return self.revocation_phrase is not None or self.new_password is not None


@dataclass(frozen=True)
class CertificateRequest:
    """What an RA asks for: a holder profile for an account, with a CSR for CSR profiles."""

    profile: str
    username: str
    csr: bytes | None = None
    transaction_limit: int | None = None  # qualified certificates, in MOP
    agent_qualification: str = ""  # qualified certificates


@dataclass(frozen=True)
class _Prepared:
    """An issuance made ready to record: its profile, account, signed certificate and, for a new
    key, the package and algorithm (or the enrolment's credential it certifies), and the
    account's seal key the package was sealed to (None when sealed to a new password's, which is
    recorded with it)."""

    profile: Profile
    account: Account
    certificate: x509.Certificate
    predecessor: str | None
    reused_credential: Credential | None
    package: dict | None
    algorithm: KeyAlgorithm | None
    sealed_to: bytes | None = None


class Issuer:
    """Issues and renews holder certificates, and issues the server's service certificates.
    ``profile`` finds a profile with the CA's settings applied."""

    def __init__(self, database: Database, keys: HsmKeyStore, accounts: AccountManager, audit: AuditLog,
                 clock: Clock, config: CaConfig, profile: Callable[[str], Profile]):
        self._database = database
        self._keys = keys
        self._accounts = accounts
        self._audit = audit
        self._clock = clock
        self._config = config
        self._profile = profile

    def issue(self, request: CertificateRequest, operator: str, predecessor: str | None = None) -> IssuedCertificate:
        """Issue a holder certificate for an account.

        Cloud-signature profiles get a new key generated in the HSM (and a credential for it);
        CSR profiles take the holder's key from the CSR, whose signature, key and subject are
        checked against the account.

        Raises:
            InvalidArgument: unknown or non-holder profile, a variant not the account's kind, bad or
                mismatching CSR, bad options.
            NotFound: no such account, or the CA is not initialised.
            AlreadyRenewed: ``predecessor`` has a successor that is not revoked.
            CertificateRefused: the account's password was reset while its new key was made
                (nothing is kept: ask again); the issuing CA's certificate has ended.
            HsmError.
        """
        prepared = self._prepare(request, predecessor)
        with self._recording(predecessor) as conn:
            issued = self._record_in(conn, prepared, operator)
        return self._recorded(prepared, issued)

    def _prepare(self, request: CertificateRequest, predecessor: str | None,
                 seal_public: bytes | None = None) -> _Prepared:
        """Everything slow of an issuance, before the transaction that records it: the checks, a
        new package's key made in the HSM (sealed to ``seal_public``, a new password's seal key,
        or else the account's) and the certificate signed. Nothing is stored, and nothing is left
        on the token: the key pair is made of session objects, destroyed once wrapped.

        Raises: as :meth:`issue`.
        """
        chosen = self._profile(request.profile)
        if not chosen.holder:
            raise InvalidArgument(f"profile {chosen.name!r} is not issued to holders")
        if (request.transaction_limit is not None or request.agent_qualification) and not chosen.qualified:
            raise InvalidArgument("a transaction limit and an agent qualification belong to qualified certificates")
        if request.transaction_limit is not None and request.transaction_limit < 0:
            raise InvalidArgument("a transaction limit is not negative")
        account = self._accounts.get(request.username)
        if account.kind.value != chosen.variant:
            raise InvalidArgument(f"profile {chosen.name!r} is for {chosen.variant} accounts; "
                                  f"{account.username!r} is {account.kind.value}")
        subject = self.subject_for(account, request.agent_qualification)
        now = self._clock.now()
        issuer, issuer_key = issuing_ca(self._database, self._keys, now)
        reused_credential = package = algorithm = sealed_to = None
        if chosen.key_source is KeySource.HSM:
            if request.csr:
                raise InvalidArgument(f"profile {chosen.name!r} has its key generated in the HSM; send no CSR")
            # The key made at enrolment serves the first certificate; a renewal gets a new one.
            reused_credential = None if predecessor else self._uncertified_credential(account)
            if reused_credential is not None:
                public_key = self._credential_public_key(reused_credential)
                if reused_credential.is_package:  # sealed to the account's seal key: checked when recorded
                    sealed_to = self._seal_public(account)
            else:
                algorithm, package, sealed_to = self._new_package(account, seal_public)
                public_key = serialization.load_der_public_key(package["public_key"])
        else:
            public_key = self._public_key_from_csr(request.csr, subject, chosen)
        certificate = end_entity_certificate(
            profile=chosen, subject=subject.name(), public_key=public_key, issuer=issuer, issuer_key=issuer_key,
            serial=new_serial(self._database), not_before=now - CLOCK_SKEW,
            days=chosen.validity_days or self._config.validity_days, ca=self._config,
            email=subject.email, transaction_limit=request.transaction_limit)
        return _Prepared(chosen, account, certificate, predecessor, reused_credential, package, algorithm, sealed_to)

    @contextmanager
    def _recording(self, predecessor: str | None) -> Iterator[Connection]:
        """The transaction that records an issuance (and, for an activation, the holder's changes
        with it).

        Raises: AlreadyRenewed: another renewal of ``predecessor`` committed first (the unique index
            on live successors): this one was rolled back whole, its new key's package with it.
            StoreConflict, and as Database.transaction.
        """
        try:
            with self._database.transaction() as conn:
                yield conn
        except StoreConflict:
            if predecessor is not None:
                self._refuse_if_renewed(predecessor)
            raise

    def _record_in(self, conn: Connection, prepared: _Prepared, operator: str) -> IssuedCertificate:
        """Store a prepared issuance in the caller's transaction: the new package and its
        credential, the certificate, their audit records.

        Raises: CertificateRefused: the account's seal key changed since the new key was sealed
            to it (a reset, unlock, password change or new recovery code committed meanwhile):
            nobody could open the package; or the enrolment's credential that the certificate is
            for was disabled, or its account's seal key changed, meanwhile (a reset). Nothing of
            the issuance is kept; made again, it seals to the new seal key.
        """
        now = self._clock.now()
        account, chosen, package = prepared.account, prepared.profile, prepared.package
        credential_id = prepared.reused_credential.id if prepared.reused_credential else None
        if prepared.sealed_to is not None and (account_seal(conn, account.id, for_share=True).seal_public_key
                                           != prepared.sealed_to):
            made = "new key" if package is not None else "certificate"
            raise CertificateRefused(
                f"the seal key of {account.username!r} changed while its {made} was made (its password was reset "
                "or changed, its recovery code replaced, or the account unlocked meanwhile); nothing was issued: "
                "ask again")
        reused = prepared.reused_credential
        if reused is not None and get_credential(conn, reused.id).status != "active":
            raise CertificateRefused(
                f"the key of {account.username!r} that its first certificate was made for was disabled meanwhile (its "
                "password was reset); nothing was issued: ask again")
        if package is not None:
            insert_package(conn, package)
            credential_id = insert_credential(conn, account.id, package["key_id"], prepared.algorithm, chosen.title,
                                              now, key_store=PACKAGE)
            self._audit.append(conn, now, "key.generated", operator, account.username, credential=credential_id,
                               package=package["key_id"], algorithm=prepared.algorithm.value,
                               master=package["master_label"])
        serial = repo.insert_certificate(conn, prepared.certificate, chosen.name, account.id, credential_id,
                                         prepared.predecessor, now)
        self._audit.append(conn, now, "certificate.issued", operator, account.username, serial=serial,
                           profile=chosen.name, predecessor=prepared.predecessor)
        return repo.get_certificate(conn, serial, now)

    def _recorded(self, prepared: _Prepared, issued: IssuedCertificate) -> IssuedCertificate:
        """What follows the commit of an issuance."""
        reused = prepared.reused_credential
        if reused is not None and not reused.is_package:
            # A key on the token, from before packages: its certificate goes beside it, as it did.
            self._keys.store_certificate(reused.key_id, prepared.certificate)
        log.info("issued %s certificate %s for %s", prepared.profile.name, issued.serial, prepared.account.username)
        return issued

    def renew(self, serial: str, operator: str, csr: bytes | None = None, transaction_limit: int | None = None,
              agent_qualification: str | None = None,
              activation: HolderActivation = HolderActivation()) -> IssuedCertificate:
        """A successor with a new key pair and serial, linked to its predecessor, which may be valid,
        expired or revoked. A qualified certificate's successor keeps the predecessor's transaction
        limit and agent qualification unless others are given (``None``: the predecessor's).

        With the holder's ``activation`` (see :class:`HolderActivation`): while the account holds
        a valid cloud-signature certificate the current password is required; a new password only
        when it holds no valid certificate. A password given is checked as Authorize checks it
        (a wrong one counts toward the lockout). The activation is one change: the new password
        (its seal key, to which the new key is sealed, the old packages' credentials disabled, the
        holder's e-mail), the new key's package and credential, the certificate and the revocation
        phrase commit in one transaction, after the slow work (hashing, the key made in the HSM,
        the certificate signed). A failure or a crash at any point leaves the account as it was,
        and the activation can simply be made again.

        Raises:
            AlreadyRenewed (a CertificateRefused): the certificate has a successor that is not
                revoked, found before anything changes or, for two renewals at once, when the
                second records its certificate (nothing of it is kept, nor of its activation).
            CertificateRefused: AC-AB-0015 when the subject data changed while the predecessor is
                still valid (revoke it first); a CSR that reuses the predecessor's key; a new
                password while the account holds a valid certificate; the account's password reset
                while the new key was made.
            AuthenticationFailed, AccountLocked, AccountDisabled, AuthenticationBusy: the holder's
                password, as Authorize.
            InvalidArgument (PasswordRejected among them): a missing password, a password or
                phrase that breaks its rules.
            NotFound, HsmError: as :meth:`issue`.
        """
        now = self._clock.now()
        with self._database.read() as conn:
            old = repo.get_certificate(conn, serial, now)
        if old.account is None:
            raise InvalidArgument(f"certificate {old.serial} was not issued to a holder")
        self._refuse_if_renewed(old.serial)
        account = self._accounts.get(old.account)
        if agent_qualification is None:
            roles = old.certificate.subject.get_attributes_for_oid(ROLE)
            agent_qualification = roles[0].value if roles else ""
        if transaction_limit is None:
            transaction_limit = transaction_limit_of(old.certificate)
        wanted = self.subject_for(account, agent_qualification).name()
        if old.status == "valid" and wanted != old.certificate.subject:
            raise CertificateRefused(
                f"the subject data changed while certificate {old.serial} is still valid; revoke it first",
                help_code="AC-AB-0015")
        if csr is not None and load_csr(csr).public_key() == old.certificate.public_key():
            raise CertificateRefused("a renewal needs a new key pair; the request reuses the old key")
        self._check_activation(account, activation, operator)
        password = phrase_hash = None
        if activation.new_password is not None:
            password = self._accounts.prepare_password(account.username, activation.new_password)
        if activation.revocation_phrase is not None:
            phrase_hash = self._accounts.prepare_revocation_phrase(activation.revocation_phrase)
        prepared = self._prepare(CertificateRequest(old.profile, old.account, csr, transaction_limit,
                                                    agent_qualification), old.serial,
                                 seal_public=password.seal_public if password else None)
        with self._recording(old.serial) as conn:
            if password is not None:  # first: it disables the old packages' credentials, not the new one
                self._accounts.set_password_in(conn, account.username, password, operator)
            issued = self._record_in(conn, prepared, operator)
            if phrase_hash is not None:
                self._accounts.set_revocation_phrase_in(conn, account.username, phrase_hash, operator)
        return self._recorded(prepared, issued)

    def _refuse_if_renewed(self, serial: str) -> None:
        """Checked before anything changes, and again by the unique index on live successors when
        the new certificate is recorded (a renewal running at the same time).

        Raises: AlreadyRenewed: ``serial`` has a successor that is not revoked.
        """
        with self._database.read() as conn:
            successor = repo.live_successor(conn, serial)
        if successor is not None:
            raise AlreadyRenewed(f"certificate {serial} was renewed already: its successor is {successor}; "
                                 "revoke the successor to renew it again")

    def _check_activation(self, account: Account, activation: HolderActivation, operator: str) -> None:
        """The holder's part of a renewal, checked before anything changes.

        Raises: as :meth:`renew` for the activation.
        """
        if activation.revocation_phrase is not None:
            check_revocation_phrase(activation.revocation_phrase.reveal())
        if activation.new_password is not None:
            if activation.holder_password is not None:
                raise InvalidArgument("give the holder's current password or a new password, not both")
            check_password_rules(activation.new_password.reveal(), account.username)
        if activation.by_holder:
            now = self._clock.now()
            with self._database.read() as conn:
                held = [c for c in repo.list_certificates(conn, now, account_id=account.id) if c.status == "valid"]
            if activation.new_password is not None and held:
                raise CertificateRefused(
                    f"the account {account.username!r} holds a valid certificate: the holder enters the current "
                    "password; a new one is set only when the account holds none")
            cloud = [c for c in held if self._profile(c.profile).key_source is KeySource.HSM]
            if activation.new_password is None and activation.holder_password is None:
                raise InvalidArgument(
                    "holder_password is required: the account holds a valid cloud-signature certificate" if cloud
                    else "holder_password or new_password is required for the holder's activation",
                    field="holder_password")
        if activation.holder_password is not None:
            self._accounts.check_password(account.username, activation.holder_password, operator)

    def issue_service_certificate(self, profile_name: str, common_name: str, public_key, operator: str,
                                  dns_names: tuple[str, ...] = (), ip_addresses: tuple[str, ...] = (),
                                  days: int = 825) -> IssuedCertificate:
        """A certificate for the server itself (``tls-server``) or for a client application or RA
        (``client-asp``, ``client-ra``), whose key the caller holds.

        Raises: InvalidArgument (profile, name, key), NotFound (CA not initialised),
            CertificateRefused (the issuing CA's certificate has ended), HsmError.
        """
        chosen = self._profile(profile_name)
        if chosen.holder or chosen.key_source is KeySource.HSM:
            raise InvalidArgument(f"profile {chosen.name!r} is not a service profile")
        check_public_key(public_key)
        if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in common_name):
            # A line break in a certificate's name would forge a line wherever the name is printed.
            raise InvalidArgument(f"the name {common_name!r} must not contain control characters")
        try:
            subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, self._config.country),
                                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, self._config.organisation),
                                 x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        except ValueError as exc:
            raise InvalidArgument(f"the name {common_name!r} is not valid: {exc}") from None
        now = self._clock.now()
        issuer, issuer_key = issuing_ca(self._database, self._keys, now)
        certificate = end_entity_certificate(
            profile=chosen, subject=subject, public_key=public_key, issuer=issuer, issuer_key=issuer_key,
            serial=new_serial(self._database), not_before=now - CLOCK_SKEW, days=days, ca=self._config,
            dns_names=dns_names, ip_addresses=ip_addresses)
        with self._database.transaction() as conn:
            serial = repo.insert_certificate(conn, certificate, chosen.name, None, None, None, now)
            self._audit.append(conn, now, "certificate.issued", operator, common_name, serial=serial,
                               profile=chosen.name)
            return repo.get_certificate(conn, serial, now)

    def subject_for(self, account: Account, agent_qualification: str = "") -> SubjectData:
        """The subject data a certificate of the account carries (see :func:`certified_account_name`)."""
        return SubjectData(
            common_name=account.holder_name, email=account.emails[0] if account.emails else "",
            organisation=account.organisation if account.kind is not AccountKind.PERSONAL else "",
            department=account.department, title=account.title,
            serial_number=certified_account_name(account.username),
            country=self._config.country, agent_qualification=agent_qualification,
            given_name=account.given_name, surname=account.surname)

    def _public_key_from_csr(self, csr: bytes | None, subject: SubjectData, chosen: Profile):
        if not csr:
            raise InvalidArgument(f"profile {chosen.name!r} needs a certificate request (CSR) with the holder's key")
        request = load_csr(csr)
        names = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names or names[0].value != subject.common_name:
            raise InvalidArgument(
                f"the request's subject {request.subject.rfc4514_string()!r} does not name the account's holder "
                f"{subject.common_name!r}")
        emails = request.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
        if emails and emails[0].value not in (subject.email, ascii_mailbox(subject.email)):
            raise InvalidArgument("the request's e-mail address is not the account's")
        return request.public_key()

    def _new_package(self, account: Account,
                     seal_public: bytes | None = None) -> tuple[KeyAlgorithm, dict, bytes | None]:
        """A new signing data package, of the account's key algorithm, sealed to the holder: to
        ``seal_public`` (the seal key of a password about to be set), or else the account's,
        which is returned with it (the transaction that records the package checks it still is).

        Raises: CertificateRefused: the account has no seal key yet (made before packages, its
            holder has not signed in since). UnsupportedAlgorithm, HsmError.
        """
        with self._database.read() as conn:
            row = account_row(conn, account.username)
        algorithm = KeyAlgorithm(row.key_algorithm)
        if seal_public is None:
            if row.seal_public_key is None:
                raise CertificateRefused(
                    f"the account {account.username!r} predates signing data packages and its holder has not signed "
                    "in since: a new key can be sealed to the holder once the holder has signed in (Authorize or a "
                    "password change) or been unlocked")
            if row.recovery_code_hash and row.seal_key_by_recovery is None:
                log.warning("the new key of %s cannot be recovered with the recovery code: the account's seal key "
                            "was made after its recovery code (at its first sign-in after the upgrade to signing "
                            "data packages, by a password set without the old one, or by a password change while "
                            "the code had its earlier form), so a forgotten password loses it until the holder "
                            "replaces the code", account.username)
            return algorithm, self._accounts.packages.make(account.username, row.seal_public_key,
                                                           algorithm), row.seal_public_key
        return algorithm, self._accounts.packages.make(account.username, seal_public, algorithm), None

    def _credential_public_key(self, credential):
        """Raises: KeyNotFound, HsmError."""
        if credential.is_package:
            return serialization.load_der_public_key(self._accounts.packages.public_key_der(credential.key_id))
        return self._keys.public_key(credential.key_id)

    def _seal_public(self, account: Account) -> bytes | None:
        with self._database.read() as conn:
            return account_seal(conn, account.id).seal_public_key

    def _uncertified_credential(self, account: Account):
        with self._database.read() as conn:
            for credential in credentials_of(conn, account.id):
                has_certificate = conn.execute(select(certificates.c.serial).where(
                    certificates.c.credential_id == credential.id)).first()
                if credential.status == "active" and not has_certificate:
                    return credential
        return None


def issuing_ca(database: Database, keys: HsmKeyStore, now: datetime.datetime):
    """The issuing CA's certificate and its HSM key, to issue a certificate at ``now``.

    Raises: NotFound (not initialised); CertificateRefused: the issuing CA's certificate has ended
        (what it signed would be valid only before its own signing); HsmError.
    """
    with database.read() as conn:
        authority = repo.get_authority(conn, ISSUING)
    if authority is None or authority.certificate is None:
        raise NotFound("the CA is not initialised; run `signserver ca init`")
    ended = authority.certificate.not_valid_after_utc
    if now >= ended:
        raise CertificateRefused(f"the issuing CA's certificate ended on {ended:%Y-%m-%d %H:%M} UTC: no certificate "
                                 "can be issued under it any more")
    return authority.certificate, hsm_private_key(keys, authority.key_id)


def new_serial(database: Database) -> int:
    """At least 64 random bits (159 in fact), positive, unique among what this CA issued."""
    while True:
        serial = x509.random_serial_number()
        with database.read() as conn:
            if not repo.serial_exists(conn, serial):
                return serial
