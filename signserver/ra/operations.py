"""RaOperations: an RA operator's work beyond renewals: enrol a holder (the account and a
certificate of any profile), unlock an account with the holder's recovery code, revoke a
certificate on the operator's decision or the holder's (with the revocation phrase), list
certificates and search holders.

The core is the only place where accounts and certificates change; the RA records the holder's
registered identity data (what the registry is later compared with) and, in its audit trail, who
did what. Secrets (passwords, recovery codes, revocation phrases, OTP seeds) pass through in
memory only: never into the RA's database, its audit trail or a log."""

from __future__ import annotations

import datetime
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from signserver.client import (AlreadyExists, AuthenticationRefused, CertificateClient, CertificatePage,
                               CertificateRecord, Evidence, InvalidArgument, NewAccount, NotFound, PermissionRefused,
                               SignServerClientError)
from signserver.clock import Clock
from signserver.ra.errors import CoreUnavailable, OperationRefused, StepRefused, StoreUnavailable, core_error
from signserver.ra.renewal import Holder, check_new_password, check_revocation_phrase, is_cloud_signature
from signserver.ra.store import repository
from signserver.ra.store import sessions as session_rows
from signserver.ra.store.database import RaDatabase
from signserver.ra.store.holder_search import search_holders

log = logging.getLogger(__name__)

T = TypeVar("T")

# What the operator checked at the counter: the holder's identity document, seen in person (the
# registry is consulted by the renewals, against the data registered here).
IN_PERSON = "in-person"
QUALIFIED = "qualified"
STATUSES = ("valid", "expired", "revoked")
MAX_REFERENCE = 128


@dataclass(frozen=True)
class Enrolment:
    """A holder to enrol: the registered identity data, the certificate's profile, and the data
    the core puts in the account and certificate. ``csr`` (PEM or DER, made on the holder's card)
    is required for every profile whose key is not in the core (all but cloud-signature);
    ``transaction_limit`` (MOP, 0: none) and ``agent_qualification`` belong to qualified
    certificates. With ``existing_account`` the account is the holder's already (a second
    certificate, or an enrolment whose issuance failed): only the certificate is issued."""

    holder: Holder
    profile: str
    kind: str = "personal"
    organisation: str = ""
    department: str = ""
    title: str = ""
    given_name: str = ""
    surname: str = ""
    key_algorithm: str = ""
    csr: bytes | None = None
    transaction_limit: int = 0
    agent_qualification: str = ""
    recovery_code: bool = True
    existing_account: bool = False


@dataclass(frozen=True)
class EnrolmentSecrets:
    """The holder's first password (typed twice alike) and, optionally, revocation phrase."""

    password: str = field(default="", repr=False)
    confirmation: str = field(default="", repr=False)
    revocation_phrase: str = field(default="", repr=False)


@dataclass(frozen=True)
class Enrolled:
    """What an enrolment gave: the certificate, and for a new account its OTP URI (the seed of the
    holder's OTP app) and recovery code, shown to the holder once and kept nowhere by the RA.
    ``certificate`` is None when the core created the account but refused the certificate
    (``refusal`` says why, ``refusal_reason`` in a stable word, errors.Refusal.reason, or
    "core_unavailable"; ``help_code`` when the documents give one): issue it again with
    ``existing_account``."""

    account: str
    certificate: CertificateRecord | None
    credential_id: str = ""
    otp_uri: str = field(default="", repr=False)
    recovery_code: str = field(default="", repr=False)
    reference: str = ""
    refusal: str = ""
    help_code: str = ""
    refusal_reason: str = ""


@dataclass(frozen=True)
class Unlocked:
    """What an unlock gave: the holder's new recovery code (empty when the account has none), and
    ``not_recorded`` true when the RA's database failed once the core had unlocked: the code is
    still shown, the unlock is in the core's audit log under its reference, not in the RA's."""

    recovery_code: str
    reference: str
    not_recorded: bool = False


@dataclass(frozen=True)
class HolderFound:
    holder: Holder
    certificates: tuple[CertificateRecord, ...]


class RaOperations:
    """The operator's commands, each one call (or two) to the core and one audit entry per change."""

    def __init__(self, database: RaDatabase, clock: Clock, certificates: CertificateClient):
        self._database = database
        self._clock = clock
        self._certificates = certificates

    def enrol(self, enrolment: Enrolment, secrets: EnrolmentSecrets, operator: str) -> Enrolled:
        """Create the holder's account (unless ``existing_account``) and issue the certificate;
        record the holder's identity data in the RA. Once the core has made the account, nothing
        is raised: the holder's OTP URI and recovery code (which the core gives once) are returned
        whatever happens next, with Enrolled.refusal saying what did not happen (the certificate
        refused, or the RA's database failed: refusal_reason "store_unavailable").

        The enrolment is recorded as pending before the core is asked (its reference goes to the
        core in the evidence) and the record is removed in the transaction that registers the
        holder; a pending enrolment left by a failure or an interruption is finished by
        ``existing_account`` (pending_enrolments lists them). The secrets are never stored.

        Raises: OperationRefused (the enrolment's own rules, or the core refused: a name taken, a
        bad CSR or profile, AC-AB-0015 ...; reason "enrolment_pending" when the core has the
        account of an earlier enrolment still pending here), CoreUnavailable, StoreUnavailable
        (before the core was asked, or with ``existing_account``).
        """
        check_enrolment(enrolment)
        _check_secrets(enrolment, secrets)
        holder = enrolment.holder
        reference = uuid.uuid4().hex
        evidence = _evidence(reference, operator)
        created = None
        if not enrolment.existing_account:
            earlier = self._pend(enrolment, reference, operator)
            created = self._create_account(enrolment, secrets, evidence, earlier)
            try:
                # One transaction: the holder registered, the pending record gone.
                self._record(operator, "holder_enrolled", f"account={holder.account} reference={reference}",
                             holder=holder, finishes=True)
            except StoreUnavailable as exc:
                log.error("the account %s was made in the core (reference %s) but the RA's database did not "
                          "record it: its enrolment stays pending (finish it with enrol --existing-account)",
                          holder.account, reference)
                return Enrolled(account=holder.account, certificate=None, credential_id=created.credential_id,
                                otp_uri=created.otp_uri, recovery_code=created.recovery_code, reference=reference,
                                refusal=f"{exc}; the account was made in the core, and its enrolment stays pending "
                                        "in the RA: once the RA's database works, finish it (and issue the "
                                        "certificate) with enrol --existing-account",
                                refusal_reason="store_unavailable")
        try:
            issued = self._core(lambda: self._certificates.issue_certificate(
                holder.account, enrolment.profile, csr=enrolment.csr, transaction_limit=enrolment.transaction_limit,
                agent_qualification=enrolment.agent_qualification, evidence=evidence),
                {NotFound: f"the core has no account {holder.account}"})
        except (OperationRefused, CoreUnavailable) as exc:
            if created is None:
                raise
            # The account exists with its OTP seed and recovery code: the holder must still get
            # them, so the refusal is returned beside them rather than raised.
            self._record_after_creation(operator, "certificate_refused",
                                        f"account={holder.account} profile={enrolment.profile} reference={reference}")
            return Enrolled(account=holder.account, certificate=None, credential_id=created.credential_id,
                            otp_uri=created.otp_uri, recovery_code=created.recovery_code, reference=reference,
                            refusal=str(exc), help_code=getattr(exc, "help_code", ""),
                            refusal_reason=getattr(exc, "reason", "") or "core_unavailable")
        if created is None:
            # An existing account is registered once the core has issued for it: a name the core
            # does not have leaves the RA as it was. An enrolment left pending is finished here.
            self._record(operator, "holder_registered", f"account={holder.account} reference={reference}",
                         holder=holder, finishes=True)
            self._record(operator, "certificate_issued", f"account={holder.account} serial={issued.serial} "
                                                         f"profile={issued.profile} reference={reference}")
        else:
            self._record_after_creation(operator, "certificate_issued",
                                        f"account={holder.account} serial={issued.serial} profile={issued.profile} "
                                        f"reference={reference}")
        return Enrolled(account=holder.account, certificate=issued,
                        credential_id=created.credential_id if created else issued.credential_id,
                        otp_uri=created.otp_uri if created else "",
                        recovery_code=created.recovery_code if created else "", reference=reference)

    def pending_enrolments(self) -> list[dict]:
        """The enrolments under way or left unfinished (the core may have made the account while
        the RA did not record it): account, reference, profile, holder data, operator, since.

        Raises: StoreUnavailable."""
        with self._database.transaction() as conn:
            return repository.list_pending_enrolments(conn)

    def _pend(self, enrolment: Enrolment, reference: str, operator: str) -> dict | None:
        """Record the enrolment as pending before the core is asked; returns an earlier pending
        enrolment of the account (kept as it is: it may be the one the core made the account for).

        Raises: StoreUnavailable: nothing was asked of the core."""
        now = self._clock.now()
        with self._database.transaction() as conn:
            earlier = repository.add_pending_enrolment(conn, enrolment.holder, reference, enrolment.profile,
                                                       operator, now)
            if earlier is None:
                repository.audit(conn, now, operator, "enrolment_pending",
                                 detail=f"account={enrolment.holder.account} profile={enrolment.profile} "
                                        f"reference={reference}")
        return earlier

    def _create_account(self, enrolment: Enrolment, secrets: EnrolmentSecrets, evidence: Evidence,
                        earlier: dict | None):
        """The core makes the account. A refusal that made nothing ends the pending record this
        enrolment made; an account that exists already with an earlier enrolment pending is
        said to be that one's.

        Raises: OperationRefused (its reason "enrolment_pending" for an account the core has
        already with an earlier enrolment pending: the sentence says how to finish it and, when
        the holder's secrets were lost, how to make them anew), CoreUnavailable (the pending
        record is kept: the core may have made the account)."""
        holder = enrolment.holder
        exists = (f"the account {holder.account} exists already; to give it another certificate, enrol with "
                  "--existing-account")
        if earlier is not None:
            # The core's answer to that enrolment, the holder's OTP key and recovery code, may never
            # have been shown (the RA stopped before): the RA keeps neither, so say how to make them anew.
            exists = (f"the account {holder.account} exists already in the core, and its enrolment of "
                      f"{earlier['created_at']:%Y-%m-%d %H:%M} UTC by {earlier['operator']} (reference "
                      f"{earlier['reference']}) is pending in the RA. If the holder was shown the account's OTP "
                      "key and recovery code then, finish it with enrol --existing-account. If not (the RA "
                      "stopped before it showed them, and they are kept nowhere), an HSM administrator makes "
                      f"them anew with the holder: `signserver account reset-otp {holder.account}` (a new OTP "
                      f"key) and `signserver account reset-password {holder.account}` (a new password and "
                      "recovery code; the account's key, not yet certified, is made anew with its certificate); "
                      "then finish it with enrol --existing-account")
        try:
            return self._core(lambda: self._certificates.create_account(NewAccount(
                account=holder.account, holder_name=holder.name, emails=holder.emails, password=secrets.password,
                kind=enrolment.kind, organisation=enrolment.organisation, department=enrolment.department,
                title=enrolment.title, revocation_phrase=secrets.revocation_phrase,
                key_algorithm=enrolment.key_algorithm, recovery_code=enrolment.recovery_code,
                given_name=enrolment.given_name, surname=enrolment.surname), evidence=evidence),
                {AlreadyExists: exists})
        except OperationRefused as exc:
            if earlier is None:
                with self._database.transaction() as conn:
                    repository.remove_pending_enrolment(conn, holder.account)
            elif exc.reason == "ALREADY_EXISTS":
                # Not a name taken by someone else: this RA's own enrolment, left unfinished.
                raise OperationRefused(str(exc), help_code=exc.help_code, reason="enrolment_pending") from None
            raise

    def _record_after_creation(self, operator: str, action: str, detail: str) -> None:
        """An audit entry once the core has made an account: a failure of the RA's database is
        logged, not raised, so that the holder's secrets are still returned."""
        try:
            self._record(operator, action, detail)
        except StoreUnavailable:
            log.error("the RA's database did not record %s (%s)", action, detail)

    def unlock(self, account: str, recovery_code: str, new_password: str, confirmation: str,
               operator: str) -> Unlocked:
        """In person: clear the account's lock with the holder's recovery code and set the new
        password; every session of the holder on the RA's pages ends with the old password (as a
        change on the holder's /password page ends them). Returns the holder's new recovery code
        (the old one is spent).

        The sessions end, and the request is recorded (``unlock_requested``), before the core is
        asked: the core spends the old code and gives the new one once, so that nothing the RA's
        database does afterwards may keep a thief signed in or lose the new code. Those signed in
        meanwhile end with the ``account_unlocked`` record; should that transaction fail, the code
        is still returned, with ``not_recorded``.

        Raises: OperationRefused (the code refused, the password's rules), CoreUnavailable,
                StoreUnavailable (nothing was asked of the core).
        """
        _check_password(new_password, confirmation)
        if not recovery_code:
            raise OperationRefused("the holder's recovery code is required", reason="recovery_code_missing")
        reference = uuid.uuid4().hex
        ended = self._end_holder_sessions(account, operator, "unlock_requested", f"reference={reference}")
        code = self._core(lambda: self._certificates.unlock_account(account, recovery_code, new_password,
                                                                    evidence=_evidence(reference, operator)),
                          {AuthenticationRefused: "the recovery code was refused (not right, already used, or the "
                                                  "account has none); nothing was changed",
                           NotFound: f"the core has no account {account}"})
        try:
            ended += self._end_holder_sessions(account, operator, "account_unlocked", f"reference={reference}")
        except StoreUnavailable:
            log.error("the account %s was unlocked in the core (reference %s) but the RA's database did not record "
                      "it", account, reference)
            return Unlocked(code, reference, not_recorded=True)
        return Unlocked(code, reference)

    def _end_holder_sessions(self, account: str, operator: str, action: str, detail: str) -> int:
        """End every session of the holder on the RA's pages, recorded as ``action`` in the same
        transaction. Returns how many ended. Raises: StoreUnavailable."""
        now = self._clock.now()
        with self._database.transaction() as conn:
            # Whoever signed in with the old password (a thief, say) is signed out with it.
            ended = session_rows.end_sessions(conn, session_rows.HOLDER, account)
            repository.audit(conn, now, operator, action, detail=f"account={account} {detail} sessions_ended={ended}")
        return ended

    def revoke(self, serial: str, reason: str, operator: str) -> CertificateRecord:
        """Revoke on the operator's decision (an RFC 5280 reason name, e.g. keyCompromise).

        Raises: OperationRefused (no such certificate, already revoked, a bad reason), CoreUnavailable.
        """
        reference = uuid.uuid4().hex
        revoked = self._core(lambda: self._certificates.revoke_certificate(
            serial, reason, evidence=_evidence(reference, operator)),
            {NotFound: f"the core has no certificate {serial}"})
        self._record(operator, "certificate_revoked", f"serial={serial} reason={reason} reference={reference}")
        return revoked

    def revoke_by_holder(self, serial: str, account: str, revocation_phrase: str, operator: str,
                         reason: str = "unspecified") -> CertificateRecord:
        """The holder revokes their certificate with their revocation phrase (at the counter or
        on the telephone with the operator). A wrong phrase is refused and recorded.

        Raises: OperationRefused (a wrong phrase, not the account's certificate, already
        revoked), CoreUnavailable.
        """
        if not revocation_phrase:
            raise OperationRefused("the holder's revocation phrase is required", reason="revocation_phrase_missing")
        reference = uuid.uuid4().hex
        try:
            revoked = self._core(lambda: self._certificates.revoke_certificate(
                serial, reason, revocation_phrase=revocation_phrase, account=account,
                evidence=_evidence(reference, operator)),
                {PermissionRefused: f"the revocation phrase is not right for certificate {serial} of {account}",
                 NotFound: f"the core has no certificate {serial}"})
        except OperationRefused:
            self._record(operator, "holder_revocation_refused", f"serial={serial} account={account} "
                                                                 f"reference={reference}")
            raise
        self._record(operator, "certificate_revoked_by_holder",
                     f"serial={serial} account={account} reason={reason} reference={reference}")
        return revoked

    def certificates(self, account: str = "", expiring_within_days: int = 0,
                     status: str = "") -> list[CertificateRecord]:
        """The core's certificates: the account's (every holder's when empty), only the valid ones
        expiring within ``expiring_within_days`` when given, only those of ``status`` when given.
        Every page of the core's is read into one list: every account's certificates, which may
        be a million, are read with :meth:`certificate_page` or :meth:`certificate_pages`.

        Raises: OperationRefused (no such account, a bad status), CoreUnavailable.
        """
        _check_status(status)
        return self._core(lambda: self._certificates.list_certificates(account, expiring_within_days, status),
                          {NotFound: f"the core has no account {account}"})

    def certificate_page(self, account: str = "", expiring_within_days: int = 0, status: str = "", *,
                         page_token: str = "", page_size: int = 0) -> CertificatePage:
        """One page of the core's of :meth:`certificates`: ``page_size`` certificates (0: the
        core's default), from where ``page_token`` (an earlier page's ``next_page_token``, asked
        with the same account, days and status; empty: the first page) says.

        Raises: OperationRefused (no such account, a bad status; reason "page_token_not_valid": a
        token that is not the core's for a page of this listing, changed or made for other
        filters), CoreUnavailable.
        """
        _check_status(status)

        def page() -> CertificatePage:
            try:
                return self._certificates.list_certificate_page(account, expiring_within_days, status,
                                                                page_token=page_token, page_size=page_size)
            except InvalidArgument as exc:
                # The token is the one value here that the operator did not choose, so its refusal
                # has a reason of its own: list again from the first page.
                if page_token and any(v.field == "page_token" for v in exc.field_violations):
                    raise OperationRefused("the page token is not the core's for a page of this listing (changed, "
                                           "or made for other filters)", reason="page_token_not_valid") from None
                raise
        return self._core(page, {NotFound: f"the core has no account {account}"})

    def certificate_pages(self, account: str = "", expiring_within_days: int = 0,
                          status: str = "") -> Iterator[list[CertificateRecord]]:
        """:meth:`certificates` a page of the core's at a time, each asked for when the one before
        has been taken: every account's certificates are never in memory at once. The core keeps
        the status: a listing of the few revoked reads those alone.

        Raises: as :meth:`certificates`, from the page it reads.
        """
        _check_status(status)
        pages = self._certificates.certificate_pages(account, expiring_within_days, status)
        while (page := self._core(lambda: next(pages, None), {NotFound: f"the core has no account {account}"})) \
                is not None:
            yield page

    def search(self, text: str, operator: str) -> list[HolderFound]:
        """The registered holders whose account, name or e-mail address contains ``text``, each
        with the core's certificates of the account. Recorded in the audit trail: it shows
        personal data.

        Raises: OperationRefused (empty text), CoreUnavailable, StoreUnavailable.
        """
        if not text.strip():
            raise OperationRefused("search for part of an account, a name or an e-mail address", reason="search_empty")
        now = self._clock.now()
        with self._database.transaction() as conn:
            holders = search_holders(conn, text)
            repository.audit(conn, now, operator, "holders_searched",
                             detail=json.dumps({"text": text.strip(), "found": [h.account for h in holders]},
                                               ensure_ascii=False))
        if not holders:
            return []
        # One listing for every holder found (at most holder_search.MAX_RESULTS, as many as one
        # listing may name), not a call per holder; a holder registered with the RA and not (or
        # no longer) in the core has none.
        held: dict[str, list[CertificateRecord]] = {holder.account: [] for holder in holders}
        for record in self._core(lambda: self._certificates.list_certificates(accounts=list(held))):
            held[record.account].append(record)
        return [HolderFound(holder, tuple(held[holder.account])) for holder in holders]

    def holder(self, account: str, operator: str) -> Holder | None:
        """The holder registered under ``account`` (None: none is). Recorded in the audit trail:
        it shows personal data.

        Raises: StoreUnavailable.
        """
        now = self._clock.now()
        with self._database.transaction() as conn:
            holder = repository.find_holder(conn, account)
            repository.audit(conn, now, operator, "holder_viewed",
                             detail=json.dumps({"account": account, "registered": holder is not None},
                                               ensure_ascii=False))
        return holder

    def outbox(self) -> dict:
        """The e-mails not sent: how many wait (and how many of them failed), when the oldest was
        queued, how many were given up, and the latest given up with their recipient and why
        (repository.outbox_state); never a message's body.

        Raises: StoreUnavailable.
        """
        with self._database.transaction() as conn:
            return repository.outbox_state(conn)

    def dismiss_email(self, message_id: int, operator: str) -> dict:
        """Mark the e-mail given up ``message_id`` dealt with (the operator reached the holder
        another way, or corrected the addresses): it no longer counts on the dashboard and stays
        listed by `signserver ra outbox` until it leaves the outbox. Recorded in the audit trail
        with the renewal it is about. Returns the message as repository.unsent_emails lists it.

        Raises: OperationRefused ("email_not_given_up": no such message, or one still waiting;
        "email_dismissed_already"), StoreUnavailable.
        """
        now = self._clock.now()
        with self._database.transaction() as conn:
            found = repository.find_email(conn, message_id)
            if found is not None and found["dismissed_at"] is None and found["given_up_at"] is not None:
                if repository.dismiss_email(conn, message_id, operator, now):
                    repository.audit(conn, now, operator, "email_dismissed", found["renewal_id"] or "",
                                     f"email={message_id} recipient={found['recipient']}")
                    return repository.find_email(conn, message_id)
                found = repository.find_email(conn, message_id)  # marked meanwhile
        if found is not None and found["dismissed_at"] is not None:
            raise OperationRefused(f"e-mail {message_id} was marked dealt with already (by {found['dismissed_by']})",
                                   reason="email_dismissed_already")
        raise OperationRefused(f"no e-mail given up has the number {message_id} (sent, gone from the outbox, or "
                               "still tried)", reason="email_not_given_up")

    def _record(self, operator: str, action: str, detail: str, *, holder: Holder | None = None,
                finishes: bool = False) -> None:
        """An audit entry, with ``holder`` registered; ``finishes``: the account's pending
        enrolment (if any) ends in the same transaction, and the entry says holder_enrolled.

        Raises: StoreUnavailable."""
        now = self._clock.now()
        with self._database.transaction() as conn:
            if holder is not None:
                repository.save_holder(conn, holder, now)
            if finishes and holder is not None:
                pending = repository.find_pending_enrolment(conn, holder.account)
                if pending is not None:
                    repository.remove_pending_enrolment(conn, holder.account)
                    action = "holder_enrolled"
                    if f"reference={pending['reference']}" not in detail:
                        detail += f" pending_reference={pending['reference']}"
            repository.audit(conn, now, operator, action, detail=detail)

    def _core(self, call: Callable[[], T], refusals: dict[type[SignServerClientError], str] | None = None) -> T:
        """Call the core; its unavailability becomes CoreUnavailable, a refusal OperationRefused
        (with the sentence of ``refusals`` for its class, else the core's own, and its help code)."""
        try:
            return call()
        except SignServerClientError as exc:
            log.debug("the core refused: %s %s", exc.code, exc.reason or "")
            message = next((text for kind, text in (refusals or {}).items() if isinstance(exc, kind)), exc.message)
            raise core_error(exc, OperationRefused, message) from None


def _check_status(status: str) -> None:
    """Raises: OperationRefused (bad_status): not a certificate's status."""
    if status and status not in STATUSES:
        raise OperationRefused(f"a status is one of {', '.join(STATUSES)}", reason="bad_status")


def _evidence(reference: str, operator: str) -> Evidence:
    """What the RA tells the core with an operator's request: the operator saw the holder's
    identity document in person; the reference names the request and the operator (the core
    knows only the RA's certificate)."""
    return Evidence(registry_match=IN_PERSON, reference=f"{reference} operator={operator}"[:MAX_REFERENCE])


def _check_password(password: str, confirmation: str) -> None:
    """Raises: OperationRefused, its reason the rule broken (renewal.check_new_password)."""
    try:
        check_new_password(password, confirmation)
    except StepRefused as exc:
        raise OperationRefused(str(exc), reason=exc.reason) from None


def check_enrolment(enrolment: Enrolment) -> None:
    """Checked before the holder is asked for secrets.

    Raises: OperationRefused: the profile and the options given do not go together; its reason
    "csr_not_wanted" (a CSR for a key made in the core), "csr_required", "qualified_only" (a
    transaction limit or agent qualification for another profile) or "negative_limit".
    """
    profile = enrolment.profile
    if is_cloud_signature(profile):
        if enrolment.csr is not None:
            raise OperationRefused(f"a {profile} certificate's key is made in the core: give no CSR",
                                   reason="csr_not_wanted")
    elif enrolment.csr is None:
        raise OperationRefused(f"a {profile} certificate's key is on the holder's card: give its CSR (--csr FILE)",
                               reason="csr_required")
    if (enrolment.transaction_limit or enrolment.agent_qualification) and not profile.startswith(QUALIFIED):
        raise OperationRefused("a transaction limit and an agent qualification belong to qualified certificates",
                               reason="qualified_only")
    if enrolment.transaction_limit < 0:
        raise OperationRefused("a transaction limit is 0 (none) or more", reason="negative_limit")


def _check_secrets(enrolment: Enrolment, secrets: EnrolmentSecrets) -> None:
    if not enrolment.existing_account:
        _check_password(secrets.password, secrets.confirmation)
        if secrets.revocation_phrase:
            try:
                check_revocation_phrase(secrets.revocation_phrase)
            except StepRefused as exc:
                raise OperationRefused(str(exc), reason=exc.reason) from None


def certificate_view(record: CertificateRecord) -> dict[str, Any]:
    """A certificate as JSON values (without its DER)."""
    def moment(value: datetime.datetime | None) -> str | None:
        return value.isoformat() if value else None
    return {"serial": record.serial, "profile": record.profile, "account": record.account,
            "credential_id": record.credential_id, "subject": record.subject, "status": record.status,
            "not_before": moment(record.not_before), "not_after": moment(record.not_after),
            "revoked_at": moment(record.revoked_at), "revocation_reason": record.revocation_reason,
            "predecessor_serial": record.predecessor_serial}


def holder_view(holder: Holder) -> dict[str, Any]:
    return {"account": holder.account, "id_type": holder.id_type, "id_number": holder.id_number,
            "name": holder.name, "birth_date": holder.birth_date.isoformat(), "emails": list(holder.emails)}
