"""CertificateAuthority: a root and an issuing CA whose keys are in the HSM, and the lifecycle of
the certificates they issue: issue, renew, revoke, query, expiry notices, CRLs and OCSP."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from sqlalchemy import select, update

from signserver.accounts.manager import AccountManager, revoke_activation_tokens
from signserver.accounts.model import Account, AccountKind
from signserver.accounts.packages import PACKAGE, insert_package
from signserver.accounts.repository import account_row, credentials_of, get_account, insert_credential
from signserver.audit.log import AuditLog
from signserver.ca import repository as repo
from signserver.ca.builder import (
    SubjectData,
    check_public_key,
    end_entity_certificate,
    load_csr,
)
from signserver.ca.client_status import ClientCertificateStatus, presented
from signserver.ca.profiles import KeySource, Profile, all_profiles, check_settings
from signserver.ca.profiles import profile as find_profile
from signserver.ca.repository import IssuedCertificate
from signserver.ca.revocation import build_crl, ocsp_response, parse_reason, stored_crl
from signserver.ca.service_keys import service_key_algorithm
from signserver.ca.setup import (  # noqa: F401 (CaStatus and the role names are part of this module's API)
    CLOCK_SKEW,
    ISSUING,
    OCSP,
    ROOT,
    TSA,
    CaSetup,
    CaStatus,
    Checkpoint,
    ca_name,
)
from signserver.clock import Clock
from signserver.config import CaConfig
from signserver.errors import (
    CertificateRefused,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.hsm.crypto_keys import hsm_private_key
from signserver.hsm.keystore import HsmKeyStore
from signserver.monitoring.meter import meter
from signserver.notify.outbox import format_time, queue_email
from signserver.secret import Secret
from signserver.store.database import Database
from signserver.store.schema import certificates, credentials

log = logging.getLogger(__name__)

OCSP_DAYS = 365
EXPIRY_NOTICE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class CertificateRequest:
    """What an RA asks for: a holder profile for an account, with a CSR for CSR profiles."""

    profile: str
    username: str
    csr: bytes | None = None
    transaction_limit: int | None = None  # qualified certificates, in MOP
    agent_qualification: str = ""  # qualified certificates


class CertificateAuthority:
    def __init__(self, database: Database, keys: HsmKeyStore, accounts: AccountManager, audit: AuditLog,
                 clock: Clock, config: CaConfig):
        self._database = database
        self._keys = keys
        self._accounts = accounts
        self._audit = audit
        self._clock = clock
        self.config = config
        # Whether a client certificate (an application's or an RA's) is still good, per call.
        self.client_status = ClientCertificateStatus(database, clock, ISSUING)
        self._setup = CaSetup(database, keys, audit, clock, config, service_steps=self)
        check_settings(config.profile_settings)

    def profile(self, name: str) -> Profile:
        """A profile with this CA's settings applied. Raises: InvalidArgument."""
        return find_profile(name, self.config.profile_settings, self.config.policy_oid_arc)

    def profiles(self) -> list[Profile]:
        """Every profile with this CA's settings applied."""
        return all_profiles(self.config.profile_settings, self.config.policy_oid_arc)

    # --- setting up ---------------------------------------------------------------------

    def status(self) -> CaStatus:
        """Which set-up steps are done. Raises: StoreUnavailable."""
        return self._setup.status()

    def initialise(self, operator: str, checkpoint: Checkpoint | None = None) -> CaStatus:
        """Create the root and the issuing CA (keys generated in the HSM), the OCSP responder, the
        TSA and the first CRLs, each step committed on its own; after an interrupted set-up, do
        what is missing (see :class:`CaSetup`).

        Raises: AlreadyExists: the CA exists, or awaits its external root. HsmError.
        """
        return self._setup.initialise(operator, checkpoint)

    def begin_external_root(self, operator: str,
                            checkpoint: Checkpoint | None = None) -> x509.CertificateSigningRequest:
        """Generate the issuing CA's key in the HSM and return its CSR for an external root (the
        same key's again when asked again).

        Raises: AlreadyExists. HsmError.
        """
        return self._setup.begin_external_root(operator, checkpoint)

    def complete_external_root(self, issuing_der: bytes, root_der: bytes, operator: str,
                               checkpoint: Checkpoint | None = None) -> CaStatus:
        """Install the issuing CA certificate signed by an external root and finish the set-up.

        Raises:
            InvalidArgument: not certificates, not for our key, not signed by that root, not a CA.
            NotFound: no external-root request is pending.
        """
        return self._setup.complete_external_root(issuing_der, root_der, operator, checkpoint)

    def renew_service_key(self, role: str, operator: str) -> x509.Certificate:
        """A new key in the HSM and certificate for the delegated OCSP responder (``ocsp-responder``)
        or the time-stamping authority (``tsa``), of the algorithm ``ca.ocsp_key_algorithm`` or
        ``ca.tsa_key_algorithm`` chooses on this token.

        Raises: NotFound, ConfigurationError (the token cannot use the algorithm set), HsmError."""
        profile_name, title = {OCSP: (OCSP, "OCSP Responder"), TSA: ("timestamping", "Time-Stamping Authority")}[role]
        algorithm = service_key_algorithm(role, self.config, self._keys.session.capabilities())
        issuer, issuer_key = self._issuing()
        key_id = self._new_key(algorithm, f"ca-{role}")
        now = self._clock.now()
        certificate = end_entity_certificate(
            profile=self.profile(profile_name), subject=self._ca_name(title),
            public_key=self._keys.public_key(key_id), issuer=issuer, issuer_key=issuer_key,
            serial=self._new_serial(), not_before=now - CLOCK_SKEW, days=OCSP_DAYS, ca=self.config)
        with self._database.transaction() as conn:
            repo.insert_certificate(conn, certificate, profile_name, None, None, None, now)
            repo.put_authority(conn, role, key_id, certificate.public_bytes(Encoding.DER), now)
            repo.delete_pending_key(conn, f"ca-{role}")  # the key is the authority's now
            self._audit.append(conn, now, "certificate.issued", operator, role,
                               serial=format(certificate.serial_number, "x"), profile=profile_name)
        return certificate

    def service_key(self, role: str, operator: str = "ca") -> tuple[str, x509.Certificate]:
        """The HSM key id and certificate of ``ocsp-responder`` or ``tsa``, made when missing.

        Raises: NotFound (CA not initialised), HsmError.
        """
        with self._database.read() as conn:
            authority = repo.get_authority(conn, role)
        if authority is None or authority.certificate is None:
            self.renew_service_key(role, operator)
            with self._database.read() as conn:
                authority = repo.get_authority(conn, role)
        return authority.key_id, authority.certificate

    # --- issuing ------------------------------------------------------------------------

    def issue(self, request: CertificateRequest, operator: str, predecessor: str | None = None) -> IssuedCertificate:
        """Issue a holder certificate for an account.

        Cloud-signature profiles get a new key generated in the HSM (and a credential for it);
        CSR profiles take the holder's key from the CSR, whose signature, key and subject are
        checked against the account.

        Raises:
            InvalidArgument: unknown or non-holder profile, a variant not the account's kind, bad or
                mismatching CSR, bad options.
            NotFound: no such account, or the CA is not initialised.
            HsmError.
        """
        chosen = self.profile(request.profile)
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
        issuer, issuer_key = self._issuing()
        now = self._clock.now()
        reused_credential = package = None
        if chosen.key_source is KeySource.HSM:
            if request.csr:
                raise InvalidArgument(f"profile {chosen.name!r} has its key generated in the HSM; send no CSR")
            # The key made at enrolment serves the first certificate; a renewal gets a new one.
            reused_credential = None if predecessor else self._uncertified_credential(account)
            if reused_credential is not None:
                public_key = self._credential_public_key(reused_credential)
            else:
                algorithm, package = self._new_package(account)
                public_key = serialization.load_der_public_key(package["public_key"])
        else:
            public_key = self._public_key_from_csr(request.csr, subject, chosen)
        certificate = end_entity_certificate(
            profile=chosen, subject=subject.name(), public_key=public_key, issuer=issuer, issuer_key=issuer_key,
            serial=self._new_serial(), not_before=now - CLOCK_SKEW,
            days=chosen.validity_days or self.config.validity_days, ca=self.config,
            email=subject.email, transaction_limit=request.transaction_limit)
        with self._database.transaction() as conn:
            credential_id = reused_credential.id if reused_credential else None
            if package is not None:
                insert_package(conn, package)
                credential_id = insert_credential(conn, account.id, package["key_id"], algorithm, chosen.title, now,
                                                  key_store=PACKAGE)
                self._audit.append(conn, now, "key.generated", operator, account.username, credential=credential_id,
                                   package=package["key_id"], algorithm=algorithm.value,
                                   master=package["master_label"])
            serial = repo.insert_certificate(conn, certificate, chosen.name, account.id, credential_id,
                                             predecessor, now)
            self._audit.append(conn, now, "certificate.issued", operator, account.username, serial=serial,
                               profile=chosen.name, predecessor=predecessor)
            issued = repo.get_certificate(conn, serial, now)
        if reused_credential is not None and not reused_credential.is_package:
            # A key on the token, from before packages: its certificate goes beside it, as it did.
            self._keys.store_certificate(reused_credential.key_id, certificate)
        log.info("issued %s certificate %s for %s", chosen.name, issued.serial, account.username)
        return issued

    def renew(self, serial: str, operator: str, csr: bytes | None = None, transaction_limit: int | None = None,
              agent_qualification: str = "") -> IssuedCertificate:
        """A successor with a new key pair and serial, linked to its predecessor, which may be valid,
        expired or revoked.

        Raises:
            CertificateRefused: AC-AB-0015 when the subject data changed while the predecessor is
                still valid (revoke it first); a CSR that reuses the predecessor's key.
            NotFound, InvalidArgument, HsmError: as :meth:`issue`.
        """
        now = self._clock.now()
        with self._database.read() as conn:
            old = repo.get_certificate(conn, serial, now)
        if old.account is None:
            raise InvalidArgument(f"certificate {old.serial} was not issued to a holder")
        account = self._accounts.get(old.account)
        wanted = self.subject_for(account, agent_qualification).name()
        if old.status == "valid" and wanted != old.certificate.subject:
            raise CertificateRefused(
                f"the subject data changed while certificate {old.serial} is still valid; revoke it first",
                help_code="AC-AB-0015")
        if csr is not None and load_csr(csr).public_key() == old.certificate.public_key():
            raise CertificateRefused("a renewal needs a new key pair; the request reuses the old key")
        return self.issue(CertificateRequest(old.profile, old.account, csr, transaction_limit, agent_qualification),
                          operator, predecessor=old.serial)

    def issue_service_certificate(self, profile_name: str, common_name: str, public_key, operator: str,
                                  dns_names: tuple[str, ...] = (), ip_addresses: tuple[str, ...] = (),
                                  days: int = 825) -> IssuedCertificate:
        """A certificate for the server itself (``tls-server``) or for a client application or RA
        (``client-asp``, ``client-ra``), whose key the caller holds.

        Raises: InvalidArgument (profile, name, key), NotFound (CA not initialised), HsmError.
        """
        chosen = self.profile(profile_name)
        if chosen.holder or chosen.key_source is KeySource.HSM:
            raise InvalidArgument(f"profile {chosen.name!r} is not a service profile")
        check_public_key(public_key)
        try:
            subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, self.config.country),
                                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.config.organisation),
                                 x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        except ValueError as exc:
            raise InvalidArgument(f"the name {common_name!r} is not valid: {exc}") from None
        issuer, issuer_key = self._issuing()
        now = self._clock.now()
        certificate = end_entity_certificate(
            profile=chosen, subject=subject, public_key=public_key, issuer=issuer, issuer_key=issuer_key,
            serial=self._new_serial(), not_before=now - CLOCK_SKEW, days=days, ca=self.config,
            dns_names=dns_names, ip_addresses=ip_addresses)
        with self._database.transaction() as conn:
            serial = repo.insert_certificate(conn, certificate, chosen.name, None, None, None, now)
            self._audit.append(conn, now, "certificate.issued", operator, common_name, serial=serial,
                               profile=chosen.name)
            return repo.get_certificate(conn, serial, now)

    # --- revoking -----------------------------------------------------------------------

    def revoke(self, serial: str, reason: str, operator: str) -> IssuedCertificate:
        """Revoke a certificate (RFC 5280 reason); its credential can no longer authorise or sign.

        Raises: InvalidArgument (reason), NotFound, CertificateRefused (already revoked).
        """
        try:
            parse_reason(reason)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        now = self._clock.now()
        with self._database.transaction() as conn:
            issued = repo.get_certificate(conn, serial, now)
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
            issued = repo.get_certificate(conn, issued.serial, now)
        self.publish_crls(root=False)
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
                self._audit.append(conn, self._clock.now(), "certificate.revocation_refused", f"holder:{username}",
                                   username, serial=issued.serial)
            raise PermissionDenied("the revocation phrase is not right for this certificate")
        return self.revoke(serial, reason, operator=f"holder:{username}")

    def identify_ra(self, certificate_pem: bytes | None) -> str:
        """The RA operator named by a client certificate: one this CA issued with the RA profile,
        valid now (its dates on every call; its revocation as :attr:`client_status` read the
        records within the last few seconds).

        Raises:
            Unauthenticated: the certificate is expired, not valid yet, revoked, or unreadable.
            PermissionDenied: no certificate, another profile, or another issuer.
        """
        refusal = PermissionDenied("only registration authorities may call this service: present a client "
                                   "certificate issued with `signserver ca issue-client --role ra`")
        if not certificate_pem:
            raise refusal
        client = presented(certificate_pem)
        # By the profile this CA recorded when it issued the certificate, not by its policy OID:
        # the OIDs follow ca.policy_oid_arc, and a changed arc must not lock out the RAs.
        if self.client_status.issued_profile(client) != "client-ra":
            raise refusal
        return client.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value

    # --- queries ------------------------------------------------------------------------

    def get(self, serial: str) -> IssuedCertificate:
        """Raises: NotFound."""
        with self._database.read() as conn:
            return repo.get_certificate(conn, serial, self._clock.now())

    def list(self, username: str | None = None, expiring_within_days: int | None = None) -> list[IssuedCertificate]:
        """Certificates of an account (or all), optionally only valid ones expiring within N days.

        Raises: NotFound (account).
        """
        now = self._clock.now()
        with self._database.read() as conn:
            account_id = get_account(conn, username, now).id if username else None
            before = now + datetime.timedelta(days=expiring_within_days) if expiring_within_days is not None else None
            return repo.list_certificates(conn, now, account_id=account_id, expiring_before=before)

    def send_expiry_notices(self) -> int:
        """E-mail each holder once, 30 days before a valid certificate expires; returns how many."""
        now = self._clock.now()
        sent = 0
        with self._database.transaction() as conn:
            for issued in repo.list_certificates(conn, now, expiring_before=now + EXPIRY_NOTICE):
                if issued.account is None:
                    continue
                marked = conn.execute(update(certificates).where(
                    certificates.c.serial == issued.serial, certificates.c.expiry_notice_at.is_(None))
                    .values(expiry_notice_at=int(now.timestamp()))).rowcount
                if not marked:
                    continue
                account = get_account(conn, issued.account, now)
                queue_email(conn, now, account.emails, "certificate_expiring", holder_name=account.holder_name,
                            serial=issued.serial, expiry=format_time(issued.not_after))
                self._audit.append(conn, now, "certificate.expiry_notice", "ca", account.username, serial=issued.serial)
                sent += 1
        return sent

    def chain(self) -> list[x509.Certificate]:
        """Issuing CA certificate, then the root. Raises: NotFound (not initialised)."""
        status = self.status()
        if not status.issuing or not status.root:
            raise NotFound("the CA is not initialised; run `signserver ca init`")
        return [status.issuing, status.root]

    # --- revocation status --------------------------------------------------------------

    def publish_crls(self, root: bool = True) -> None:
        """Sign new CRLs: the issuing CA's, and the root's when its key is ours."""
        now = self._clock.now()
        validity = datetime.timedelta(hours=self.config.crl_hours)
        issuer, issuer_key = self._issuing()
        with self._database.transaction() as conn:
            build_crl(conn, ISSUING, issuer, issuer_key, now, validity, include_revoked=True)
            root_authority = repo.get_authority(conn, ROOT)
        if root and root_authority and root_authority.key_id:
            root_key = hsm_private_key(self._keys, root_authority.key_id)
            with self._database.transaction() as conn:
                build_crl(conn, ROOT, root_authority.certificate, root_key, now, validity, include_revoked=False)

    def refresh_crls_if_due(self) -> bool:
        """Re-sign CRLs whose next update is less than a quarter of their validity away."""
        now = int(self._clock.now().timestamp())
        margin = self.config.crl_hours * 900
        with self._database.read() as conn:
            newest = {name: row for name in (ISSUING, ROOT) if (row := stored_crl(conn, name)) is not None}
        for name, row in newest.items():
            meter().crl_age(name, now - row.this_update)
        due = [name for name, row in newest.items() if row.next_update - now < margin]
        if due:
            self.publish_crls(root=ROOT in due)
        return bool(due)

    def crl(self, authority: str) -> bytes:
        """The latest CRL (DER). Raises: NotFound."""
        with self._database.read() as conn:
            row = stored_crl(conn, authority)
        if row is None:
            raise NotFound(f"no CRL for {authority!r}")
        return row.der

    def ocsp(self, request_der: bytes) -> bytes:
        """An OCSP response (DER) for a DER request. Raises: NotFound (not initialised), HsmError."""
        with self._database.read() as conn:
            issuing, responder = repo.get_authority(conn, ISSUING), repo.get_authority(conn, OCSP)
        if not issuing or not issuing.certificate or not responder:
            raise NotFound("the CA is not initialised")
        responder_key = hsm_private_key(self._keys, responder.key_id)
        with self._database.read() as conn:
            return ocsp_response(conn, request_der, issuing.certificate, responder.certificate, responder_key,
                                 self._clock.now(), datetime.timedelta(hours=self.config.crl_hours))

    # --- helpers ------------------------------------------------------------------------

    def subject_for(self, account: Account, agent_qualification: str = "") -> SubjectData:
        return SubjectData(
            common_name=account.holder_name, email=account.emails[0] if account.emails else "",
            organisation=account.organisation if account.kind is not AccountKind.PERSONAL else "",
            department=account.department, title=account.title, serial_number=account.username,
            country=self.config.country, agent_qualification=agent_qualification,
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
        if emails and emails[0].value != subject.email:
            raise InvalidArgument("the request's e-mail address is not the account's")
        return request.public_key()

    def _new_package(self, account: Account) -> tuple[KeyAlgorithm, dict]:
        """A new signing data package, of the account's key algorithm, sealed to the holder.

        Raises: CertificateRefused: the account has no seal key yet (made before packages, its
            holder has not signed in since). UnsupportedAlgorithm, HsmError.
        """
        with self._database.read() as conn:
            row = account_row(conn, account.username)
        if row.seal_public_key is None:
            raise CertificateRefused(
                f"the account {account.username!r} predates signing data packages and its holder has not signed in "
                "since: a new key can be sealed to the holder once the holder has signed in (Authorize or a password "
                "change) or been unlocked")
        if row.recovery_code_hash and row.seal_key_by_recovery is None:
            log.warning("the new key of %s cannot be recovered with the recovery code: the account's seal key was "
                        "made after its recovery code (at its first sign-in after the upgrade to signing data "
                        "packages), so a forgotten password loses it", account.username)
        algorithm = KeyAlgorithm(row.key_algorithm)
        return algorithm, self._accounts.packages.make(account.username, row.seal_public_key, algorithm)

    def _credential_public_key(self, credential):
        """Raises: KeyNotFound, HsmError."""
        if credential.is_package:
            return serialization.load_der_public_key(self._accounts.packages.public_key_der(credential.key_id))
        return self._keys.public_key(credential.key_id)

    def signing_certificate(self, credential_id: str) -> x509.Certificate | None:
        """The credential's newest certificate, from the database (None before its first)."""
        with self._database.read() as conn:
            der = conn.execute(select(certificates.c.der).where(certificates.c.credential_id == credential_id)
                               .order_by(certificates.c.issued_at.desc()).limit(1)).scalar()
        return x509.load_der_x509_certificate(der) if der is not None else None

    def _uncertified_credential(self, account: Account):
        with self._database.read() as conn:
            for credential in credentials_of(conn, account.id):
                has_certificate = conn.execute(select(certificates.c.serial).where(
                    certificates.c.credential_id == credential.id)).first()
                if credential.status == "active" and not has_certificate:
                    return credential
        return None

    def _issuing(self):
        with self._database.read() as conn:
            authority = repo.get_authority(conn, ISSUING)
        if authority is None or authority.certificate is None:
            raise NotFound("the CA is not initialised; run `signserver ca init`")
        return authority.certificate, hsm_private_key(self._keys, authority.key_id)

    def _new_key(self, algorithm: KeyAlgorithm, purpose: str) -> str:
        """A key for a CA key ``purpose``; one an interrupted attempt generated is found again
        (see :meth:`CaSetup.new_key`). Raises: UnsupportedAlgorithm, HsmError."""
        return self._setup.new_key(algorithm, purpose)

    def _new_serial(self) -> int:
        """At least 64 random bits (159 in fact), positive, unique among what this CA issued."""
        while True:
            serial = x509.random_serial_number()
            with self._database.read() as conn:
                if not repo.serial_exists(conn, serial):
                    return serial

    def _ca_name(self, role: str) -> x509.Name:
        return ca_name(self.config, role)
