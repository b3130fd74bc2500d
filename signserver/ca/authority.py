"""CertificateAuthority: a root and an issuing CA whose keys are in the HSM, and the one entry to
the lifecycle of the certificates they issue. Each job has its module: set-up (setup.py),
issuance (issuance.py), revoking (revoking.py), revocation status: CRLs and OCSP
(revocation_status.py), expiry notices (expiry_notices.py), the RAs as callers (ra_requests.py)."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Collection, Iterator

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from signserver.accounts.manager import AccountManager
from signserver.accounts.model import Account
from signserver.accounts.repository import account_ids, get_account
from signserver.audit.log import AuditLog
from signserver.ca import repository as repo
from signserver.ca.builder import SubjectData, end_entity_certificate
from signserver.ca.certificate_pages import CertificateListing, CertificatePage
from signserver.ca.certificate_pages import page_size as page_size_of
from signserver.ca.client_status import ClientCertificateStatus
from signserver.ca.expiry_notices import ExpiryNotices
from signserver.ca.issuance import (  # noqa: F401 (the requests are part of this module's API)
    CertificateRequest,
    HolderActivation,
    Issuer,
    issuing_ca,
    new_serial,
)
from signserver.ca.leftover_keys import LeftoverServiceKeys
from signserver.ca.profiles import Profile, all_profiles, check_settings
from signserver.ca.profiles import profile as find_profile
from signserver.ca.ra_requests import RA_PROFILE, RaRequests
from signserver.ca.recertification import IssuingRecertification
from signserver.ca.repository import IssuedCertificate
from signserver.ca.revocation_status import RevocationStatus
from signserver.ca.revoking import Revoker
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
from signserver.errors import KeyNotFound, NotFound, SignServerError
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.hsm.keystore import HsmKeyStore, KeyInfo
from signserver.secret import Secret
from signserver.store.database import Database
from signserver.store.schema import certificates

OCSP_DAYS = 365
# How long a renewed OCSP responder's or TSA's old key stays on the token: a request on any node
# that read the old key just before the renewal committed may still sign with it (OCSP and TSA
# requests last seconds, bounded by http.request_timeout_seconds); after this, nothing names it.
SUPERSEDED_KEY_GRACE = datetime.timedelta(hours=1)
# What an RA is shown besides holders' certificates (get's for_ra): the RAs' client certificates,
# which an RA checks an operator's sign-in with an RA certificate against (revoked, still valid).
# Applications' client certificates and the CA's service certificates are none of its business.
RA_SHOWN_PROFILES = (RA_PROFILE,)

log = logging.getLogger(__name__)


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
        # Who an RA is, and its requests admitted once each with their evidence.
        self.ra_requests = RaRequests(database, audit, clock, self.client_status)
        self._setup = CaSetup(database, keys, audit, clock, config, service_steps=self)
        self._recertification = IssuingRecertification(database, keys, audit, clock, config)
        # Service keys that renewals of earlier versions left on the token unrecorded.
        self._leftover_keys = LeftoverServiceKeys(database, keys, clock)
        self._issuer = Issuer(database, keys, accounts, audit, clock, config, self.profile)
        self._revocation_status = RevocationStatus(database, keys, clock, config)
        self._revoker = Revoker(database, accounts, audit, clock, self._revocation_status)
        self._expiry_notices = ExpiryNotices(database, audit, clock)
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
            InvalidArgument: not certificates, not for our key, not signed by that root, not a CA,
                a key usage without keyCertSign and cRLSign, ended or not yet begun.
            NotFound: no external-root request is pending.
        """
        return self._setup.complete_external_root(issuing_der, root_der, operator, checkpoint)

    def recertify_issuing(self, operator: str, issuing_der: bytes | None = None) -> x509.Certificate:
        """A new certificate for the issuing CA's same key and subject, signed by this CA's root or,
        under an external root, given (``issuing_der``) and checked; returns it.

        Raises: as :meth:`IssuingRecertification.recertify`.
        """
        return self._recertification.recertify(operator, issuing_der)

    def issuing_request(self) -> x509.CertificateSigningRequest:
        """A request for the issuing CA's key and subject, for an external root to certify again.

        Raises: NotFound (not set up), HsmError.
        """
        return self._recertification.request()

    def renew_service_key(self, role: str, operator: str) -> x509.Certificate:
        """A new key in the HSM and certificate for the delegated OCSP responder (``ocsp-responder``)
        or the time-stamping authority (``tsa``), of the algorithm ``ca.ocsp_key_algorithm`` or
        ``ca.tsa_key_algorithm`` chooses on this token; returns the certificate. When another
        node's renewal of the role commits first, that one's certificate is returned, and the key
        made here destroyed.

        Raises: NotFound, ConfigurationError (the token cannot use the algorithm set),
            CertificateRefused (the issuing CA's certificate has ended), HsmError."""
        with self._database.read() as conn:
            current = repo.get_authority(conn, role)
        certificate = self._replace_service_key(role, current.key_id if current is not None else None, operator)
        if certificate is None:
            with self._database.read() as conn:
                certificate = repo.get_authority(conn, role).certificate
        return certificate

    def make_service_key(self, role: str, operator: str) -> x509.Certificate:
        """The certificate of ``ocsp-responder`` or ``tsa``, made with a new key as
        :meth:`renew_service_key` makes one when the role has none; one that another node's set-up
        makes meanwhile is returned, and not replaced. Raises: as :meth:`renew_service_key`."""
        with self._database.read() as conn:
            current = repo.get_authority(conn, role)
        if current is None or current.certificate is None:
            made = self._replace_service_key(role, None, operator)
            if made is not None:
                return made
            with self._database.read() as conn:
                current = repo.get_authority(conn, role)
        return current.certificate

    def _replace_service_key(self, role: str, replacing: str | None, operator: str) -> x509.Certificate | None:
        """:meth:`renew_service_key`'s renewal of the key ``replacing`` (None: the role has none
        yet), or None when the role's key is no longer that one as the renewal commits: another
        node renewed it meanwhile (two nodes' background passes overlapping), and the key generated
        here is destroyed. Raises: as :meth:`renew_service_key`."""
        profile_name, title = {OCSP: (OCSP, "OCSP Responder"), TSA: ("timestamping", "Time-Stamping Authority")}[role]
        purpose = f"ca-{role}"
        algorithm = service_key_algorithm(role, self.config, self._keys.session.capabilities())
        now = self._clock.now()
        issuer, issuer_key = issuing_ca(self._database, self._keys, now)
        # Generated outside the transaction: a key takes seconds, and SQLite's writers would wait.
        key = self._new_key(algorithm, purpose)
        public_key = self._keys.public_key(key.key_id)
        serial = new_serial(self._database)
        with self._database.transaction() as conn:
            # The role's row locked, and its key compared with the one this renewal replaces: of two
            # renewals at once, one changes it, and the other, finding it changed, changes nothing.
            previous = repo.get_authority(conn, role, for_update=True)
            if previous is None and replacing is None:
                replaces = repo.add_authority(conn, role, key.key_id, None, now)  # its certificate follows
            else:
                replaces = previous is not None and previous.key_id == replacing
            if replaces:
                # Signed here, once the renewal is known to stand: a certificate the CA signs is
                # always recorded (one HSM signature, as a revocation's CRL is signed in its own).
                certificate = end_entity_certificate(
                    profile=self.profile(profile_name), subject=self._ca_name(title), public_key=public_key,
                    issuer=issuer, issuer_key=issuer_key, serial=serial, not_before=now - CLOCK_SKEW,
                    days=OCSP_DAYS, ca=self.config)
                repo.insert_certificate(conn, certificate, profile_name, None, None, None, now)
                repo.put_authority(conn, role, key.key_id, certificate.public_bytes(Encoding.DER), now)
                if previous is not None and previous.key_id and previous.key_id != key.key_id:
                    # Replaced in the same commit: the old key leaves the token after the grace
                    # (remove_superseded_keys), and no crash can leave it there unremembered.
                    repo.put_superseded_key(conn, previous, now)
                repo.delete_pending_key(conn, purpose, key.label)  # the key is the authority's now
                self._audit.append(conn, now, "certificate.issued", operator, role,
                                   serial=format(certificate.serial_number, "x"), profile=profile_name)
        if replaces:
            return certificate
        log.info("the %s's key was renewed by another node meanwhile: the key generated here is not used", role)
        self._discard_unused_key(purpose, key)
        return None

    def _discard_unused_key(self, purpose: str, key: KeyInfo) -> None:
        """Destroy a key a renewal generated and did not use, unless an authority uses it: another
        node's renewal may have found it on the token, labelled as pending, and used it. Its label
        is forgotten once it is gone; a key the token fails to destroy stays recorded, and the next
        renewal of the role uses it (CaSetup.new_key_info). Raises: HsmError, StoreUnavailable."""
        with self._database.read() as conn:
            in_use = repo.authority_key_ids(conn)
        if key.key_id in in_use:
            return
        try:
            self._keys.delete(key.key_id)
        except KeyNotFound:
            pass  # destroyed by the other node, which found it too and lost as well
        with self._database.transaction() as conn:
            repo.delete_pending_key(conn, purpose, key.label)

    def renew_service_keys_if_due(self, operator: str = "ca") -> list[str]:
        """Renew the OCSP responder's and the TSA's certificates (with new keys) once less than a
        quarter of their validity is left, so that OCSP responses and time-stamps are never signed
        under an ended certificate; and at once when their key is not on the token (a database
        restored from a backup older than the last renewal names a key since removed) or their
        certificate was revoked (`signserver ca revoke`: its key compromised, say); returns the
        roles renewed. A certificate that already ends with the issuing CA is left as it is: a new
        one could last no longer. A role another node's pass renews meanwhile is left to it (see
        :meth:`_replace_service_key`), so that it is renewed once. Then, on a process's first pass,
        records as superseded the keys that renewals of earlier versions left on the token
        unrecorded (:meth:`LeftoverServiceKeys.record_once`), and removes the keys that renewals
        replaced once their grace has passed (:meth:`remove_superseded_keys`).

        Raises: ConfigurationError, HsmError: as :meth:`renew_service_key`.
        """
        now = self._clock.now()
        with self._database.read() as conn:
            issuing = repo.get_authority(conn, ISSUING)
            current = {role: repo.get_authority(conn, role) for role in (OCSP, TSA)}
            revoked = {role for role, authority in current.items()
                       if authority is not None and authority.certificate is not None
                       and repo.is_revoked(conn, authority.certificate.serial_number)}
        if issuing is None or issuing.certificate is None:
            return []
        renewed = []
        for role, authority in current.items():
            if authority is None or authority.certificate is None:
                continue  # the set-up makes it
            certificate = authority.certificate
            left = certificate.not_valid_after_utc - now
            lasting = certificate.not_valid_after_utc - certificate.not_valid_before_utc
            if now >= issuing.certificate.not_valid_after_utc:
                continue  # nothing can be issued under it (a recertified issuing CA can again)
            if role in revoked:
                log.warning("the %s's certificate %x is revoked: renewing it with a new key", role,
                            certificate.serial_number)
            elif not self._on_token(authority.key_id):
                log.warning("the %s's key %s is not on the token (a database restored from an older backup?): "
                            "renewing its certificate %x with a new key", role, authority.key_id,
                            certificate.serial_number)
            elif not (left < lasting / 4 and certificate.not_valid_after_utc < issuing.certificate.not_valid_after_utc):
                continue
            if self._replace_service_key(role, authority.key_id, operator) is None:
                continue  # another node's pass renewed it meanwhile
            log.info("renewed the %s certificate %x, which ends on %s", role, certificate.serial_number,
                     certificate.not_valid_after_utc.date())
            renewed.append(role)
        try:
            self._leftover_keys.record_once()
        except SignServerError as exc:  # the removals due go on; the search is tried again next pass
            log.warning("could not look for service keys left on the token by earlier renewals, tried again on "
                        "the next pass: %s", exc)
        self.remove_superseded_keys(operator)
        return renewed

    def _on_token(self, key_id: str) -> bool:
        """Whether the key is on the token. Raises: HsmError (the token cannot tell)."""
        try:
            self._keys.get(key_id)
        except KeyNotFound:
            return False
        return True

    def remove_superseded_keys(self, operator: str = "ca") -> list[str]:
        """Destroy on the token (private key, public key, certificate object) the OCSP responder's
        and TSA's keys that renewals replaced, once SUPERSEDED_KEY_GRACE has passed since: until
        then a request that read the old key may still sign with it. A key is forgotten only after
        the token has destroyed it, so a removal interrupted in between is finished by the next
        pass, which finds it gone; a key an authority signs with now is never destroyed. Other nodes
        keep no use for the old key's handles: they read the current key from the database for
        every response. Returns the key ids removed. A key the token fails to destroy is logged and
        tried again on the next pass. Two nodes' passes at once (one outlasting its lease) may both
        destroy a key; the one that forgets it records and returns its removal, the other neither.

        Raises: StoreUnavailable.
        """
        now = self._clock.now()
        with self._database.read() as conn:
            due = [key for key in repo.superseded_keys(conn) if key.superseded_at + SUPERSEDED_KEY_GRACE <= now]
            in_use = repo.current_authority_key_ids(conn) if due else set()
        removed = []
        for key in due:
            serial = format(key.certificate.serial_number, "x") if key.certificate is not None else ""
            if key.key_id in in_use:
                log.warning("superseded key %s is an authority's current key: it stays on the token", key.key_id)
            else:
                try:
                    self._keys.delete(key.key_id)
                except KeyNotFound:
                    pass  # destroyed by a pass that stopped before forgetting it
                except SignServerError as exc:
                    log.warning("could not remove superseded key %s (certificate %s) from the token, tried again "
                                "on the next pass: %s", key.key_id, serial, exc)
                    continue
            with self._database.transaction() as conn:
                # Recorded by the pass whose DELETE forgot it: another node's pass may have read it
                # as due too, and destroyed or forgotten it first.
                removal = repo.delete_superseded_key(conn, key.key_id) and key.key_id not in in_use
                if removal:
                    self._audit.append(conn, now, "ca.superseded_key_removed", operator, key.role,
                                       key=key.key_id, serial=serial)
            if removal:
                removed.append(key.key_id)
                log.info("removed the %s's superseded key %s (certificate %s, replaced on %s) from the token",
                         key.role, key.key_id, serial, key.superseded_at.date())
        return removed

    def service_key(self, role: str, operator: str = "ca") -> tuple[str, x509.Certificate]:
        """The HSM key id and certificate of ``ocsp-responder`` or ``tsa``, made when missing.

        Raises: NotFound (CA not initialised), HsmError.
        """
        with self._database.read() as conn:
            authority = repo.get_authority(conn, role)
        if authority is None or authority.certificate is None:
            self.make_service_key(role, operator)  # or another node made it meanwhile
            with self._database.read() as conn:
                authority = repo.get_authority(conn, role)
        return authority.key_id, authority.certificate

    # --- issuing (issuance.py) ------------------------------------------------------------

    def issue(self, request: CertificateRequest, operator: str, predecessor: str | None = None) -> IssuedCertificate:
        """Issue a holder certificate for an account. Raises: as :meth:`Issuer.issue`."""
        return self._issuer.issue(request, operator, predecessor)

    def renew(self, serial: str, operator: str, csr: bytes | None = None, transaction_limit: int | None = None,
              agent_qualification: str | None = None,
              activation: HolderActivation = HolderActivation()) -> IssuedCertificate:
        """A successor with a new key pair, with or without the holder's activation.

        Raises: as :meth:`Issuer.renew` (CertificateRefused with AC-AB-0015 among them).
        """
        return self._issuer.renew(serial, operator, csr, transaction_limit, agent_qualification, activation)

    def issue_service_certificate(self, profile_name: str, common_name: str, public_key, operator: str,
                                  dns_names: tuple[str, ...] = (), ip_addresses: tuple[str, ...] = (),
                                  days: int = 825) -> IssuedCertificate:
        """A certificate for the server itself or for a client application or RA.

        Raises: as :meth:`Issuer.issue_service_certificate`.
        """
        return self._issuer.issue_service_certificate(profile_name, common_name, public_key, operator, dns_names,
                                                      ip_addresses, days)

    def subject_for(self, account: Account, agent_qualification: str = "") -> SubjectData:
        """The subject data a certificate of the account carries."""
        return self._issuer.subject_for(account, agent_qualification)

    # --- revoking (revoking.py) -----------------------------------------------------------

    def revoke(self, serial: str, reason: str, operator: str, holders_only: bool = False) -> IssuedCertificate:
        """Revoke a certificate (RFC 5280 reason); ``holders_only``: an RA's revocation, of a
        holder's certificate only. Raises: as :meth:`Revoker.revoke`."""
        return self._revoker.revoke(serial, reason, operator, holders_only)

    def revoke_by_holder(self, serial: str, username: str, phrase: Secret, reason: str = "unspecified") -> IssuedCertificate:
        """The holder revokes with the revocation phrase. Raises: as :meth:`Revoker.revoke_by_holder`."""
        return self._revoker.revoke_by_holder(serial, username, phrase, reason)

    # --- the RAs (ra_requests.py) ---------------------------------------------------------

    def identify_ra(self, certificate_pem: bytes | None) -> str:
        """The RA operator named by a client certificate (see :meth:`RaRequests.identify`).

        Raises: Unauthenticated (expired, revoked, unreadable), PermissionDenied (not an RA's).
        """
        return self.ra_requests.identify(certificate_pem)

    # --- queries --------------------------------------------------------------------------

    def get(self, serial: str, for_ra: bool = False) -> IssuedCertificate:
        """The certificate of ``serial``. ``for_ra``: an RA's view, a holder's certificate or an
        RA's client certificate (RA_SHOWN_PROFILES) only: an application's client certificate or
        a service certificate of the CA is NotFound, as a serial never issued is.

        Raises: NotFound."""
        with self._database.read() as conn:
            return repo.get_certificate(conn, serial, self._clock.now(), RA_SHOWN_PROFILES if for_ra else None)

    def list_page(self, username: str | None = None, expiring_within_days: int | None = None, page_size: int = 0,
                  page_token: str = "", status: str = "", holders_only: bool = False,
                  usernames: Collection[str] = ()) -> CertificatePage:
        """One page of the certificates of an account (or all; only valid ones expiring within
        ``expiring_within_days`` when given) in the order of their issue: ``page_size`` of them (0: the
        default, at most the maximum: certificate_pages.py), from where ``page_token`` (an earlier
        page's ``next_page_token`` with the same filters; empty for the first page) says; only
        those of ``status`` ("valid", "expired", "revoked") when given, and only holders'
        certificates with ``holders_only`` (an RA's listing), both chosen by the database.

        ``usernames`` instead of ``username``: the certificates of those accounts in one listing
        (an RA's search shows the holders it found with theirs); a name with no account is passed
        over.

        ``holders_only`` is not bound into the tokens: an RA lists that way alone, and a token
        from a listing of every certificate names a place in this one too.

        Raises: InvalidArgument (status: not a status; page_token: not one of this listing's;
        accounts: both ``username`` and ``usernames``, or too many), NotFound (account).
        """
        listing = CertificateListing(username or "", expiring_within_days or 0, status, frozenset(usernames))
        found, last = self._page(username, expiring_within_days or None, page_size, listing.position(page_token),
                                 status, holders_only, listing.usernames)
        return CertificatePage(found, listing.token(last) if last else "")

    def list_pages(self, username: str | None = None, expiring_within_days: int | None = None,
                   page_size: int = 0) -> Iterator[list[IssuedCertificate]]:
        """:meth:`list_page`'s certificates, in its order and with its filters, a page at a time
        (``page_size``: as :meth:`list_page`): each page read in a transaction of its own once the
        one before has been taken. Memory holds a page, however many certificates there are, and
        no transaction stays open while a page is printed.

        Raises: NotFound (account), from the page it reads.
        """
        after = None
        while True:
            found, after = self._page(username, expiring_within_days, page_size, after)
            yield found
            if after is None:
                return

    def _page(self, username: str | None, expiring_within_days: int | None, page_size: int,
              after: repo.PagePosition | None, status: str = "", holders_only: bool = False,
              usernames: Collection[str] = ()) -> tuple[list[IssuedCertificate], repo.PagePosition | None]:
        """The page after ``after`` (None: the first) and the position of its last certificate when
        more follow; ``expiring_within_days`` None: no window.

        Raises: NotFound (account).
        """
        now = self._clock.now()
        with self._database.read() as conn:
            account_id = get_account(conn, username, now).id if username else None
            among = account_ids(conn, usernames) if usernames else None
            before = now + datetime.timedelta(days=expiring_within_days) if expiring_within_days is not None else None
            return repo.certificate_page(conn, now, page_size_of(page_size), after, account_id=account_id,
                                         expiring_before=before, status=status, holders_only=holders_only,
                                         account_ids=among)

    def chain(self) -> list[x509.Certificate]:
        """Issuing CA certificate, then the root. Raises: NotFound (not initialised)."""
        status = self.status()
        if not status.issuing or not status.root:
            raise NotFound("the CA is not initialised; run `signserver ca init`")
        return [status.issuing, status.root]

    def signing_certificate(self, credential_id: str) -> x509.Certificate | None:
        """The credential's newest certificate, from the database (None before its first)."""
        with self._database.read() as conn:
            der = conn.execute(select(certificates.c.der).where(certificates.c.credential_id == credential_id)
                               .order_by(certificates.c.issued_at.desc()).limit(1)).scalar()
        return x509.load_der_x509_certificate(der) if der is not None else None

    # --- lifecycle jobs (expiry_notices.py, revocation_status.py) ---------------------------

    def send_expiry_notices(self) -> int:
        """E-mail each holder once, 30 days before a valid certificate expires; returns how many."""
        return self._expiry_notices.send()

    def publish_crls(self, root: bool = True) -> None:
        """Sign new CRLs: the issuing CA's, and the root's when its key is ours."""
        self._revocation_status.publish_crls(root)

    def refresh_crls_if_due(self) -> bool:
        """Re-sign CRLs whose next update is less than a quarter of their validity away."""
        return self._revocation_status.refresh_crls_if_due()

    def crl(self, authority: str) -> bytes:
        """The latest CRL (DER). Raises: NotFound."""
        return self._revocation_status.crl(authority)

    def ocsp(self, request_der: bytes, take_signature: Callable[[], float] | None = None) -> bytes:
        """An OCSP response (DER) for a DER request; ``take_signature`` is asked before each new
        signature (see revocation.ocsp_response). Raises: NotFound (not initialised), RateLimited,
        HsmError."""
        return self._revocation_status.ocsp(request_der, take_signature)

    # --- helpers --------------------------------------------------------------------------

    def _new_key(self, algorithm: KeyAlgorithm, purpose: str) -> KeyInfo:
        """A key for a CA key ``purpose``; one an interrupted attempt generated is found again
        (see :meth:`CaSetup.new_key_info`). Raises: UnsupportedAlgorithm, HsmError."""
        return self._setup.new_key_info(algorithm, purpose)

    def _ca_name(self, role: str) -> x509.Name:
        return ca_name(self.config, role)
