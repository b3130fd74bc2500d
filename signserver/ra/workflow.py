"""RenewalWorkflow: the operator's and the holder's renewal steps (confirmation, notices, the
identity verification, the in-person queue; activation in signserver.ra.activation), each one
transaction of the RA's database (signserver.ra.steps). The registry and the core are asked between
transactions. Codes and the holder's token pass through in memory only: the store keeps their
hashes, the e-mail the clear value."""

from __future__ import annotations

import datetime
import logging
import secrets
import uuid
from dataclasses import replace

from signserver.ra import codes, holder_token, messages
from signserver.ra import renewal as machine
from signserver.ra.activation import ActivationSecrets, ActivationSteps
from signserver.ra.application import ApplicationSteps
from signserver.ra.errors import (CodeRefused, ConcurrentUpdate, HolderNotAuthorised, IdentityNotFound,
                                  OperationRefused, RaError, RegistryUnavailable, StepRefused)
from signserver.ra.help_codes import IDENTITY_DATA_CHANGED, help_code
from signserver.ra.registry import photo_media_type
from signserver.ra.renewal import Holder, Renewal, State, Step
from signserver.ra.steps import HOLDER, SYSTEM, Certificates, Registry
from signserver.ra.store import repository

log = logging.getLogger(__name__)

__all__ = ["RenewalWorkflow", "ActivationSecrets", "Registry", "Certificates", "view"]

RESEND_AFTER = datetime.timedelta(seconds=60)
ADDRESS_BLOCKED = ("too many codes were asked or typed wrong for this address: it is blocked for this renewal; "
                   "ask the registration authority to reopen it")
NOT_AUTHORISED = "the renewal's holder token is missing, wrong or no longer valid"


class RenewalWorkflow(ApplicationSteps, ActivationSteps):
    """The operator's and the holder's renewal steps (the application document: ApplicationSteps;
    activation: ActivationSteps)."""

    # Holders and the operator

    def register_holder(self, holder: Holder, operator: str) -> None:
        """Record (or update) a holder's registered data, as at enrolment."""
        now = self._clock.now()
        with self._database.transaction() as conn:
            repository.save_holder(conn, holder, now)
            repository.audit(conn, now, operator, "holder_registered", detail=holder.account)

    def open_renewal(self, serial: str, operator: str) -> Renewal:
        """The renewal of ``serial`` under way, else a new one from the core's record of it.

        Raises: StepRefused: not a holder's certificate ("not_a_holders_certificate"), revoked
                ("certificate_revoked"), or its holder is not registered ("holder_not_registered");
                CoreUnavailable; RaError from the client (not found, ...).
        """
        with self._database.transaction() as conn:
            existing = repository.open_renewal_of(conn, serial)
        if existing is not None:
            return existing
        record = self._core(self._certificates.get_certificate, serial)
        if not record.account:
            raise StepRefused(f"certificate {serial} is not a holder's", reason="not_a_holders_certificate")
        if record.status == "revoked":
            raise StepRefused(f"certificate {serial} is revoked", reason="certificate_revoked")
        now = self._clock.now()
        with self._database.transaction() as conn:
            existing = repository.open_renewal_of(conn, serial)  # opened meanwhile (the core was asked)
            if existing is not None:
                return existing
            holder = repository.find_holder(conn, record.account)
            if holder is None:
                raise StepRefused(f"the holder of {serial} ({record.account}) is not registered with the RA",
                                  reason="holder_not_registered")
            renewal = machine.open_renewal(uuid.uuid4().hex, serial=record.serial, account=record.account,
                                           profile=record.profile, expires=record.not_after, holder=holder, now=now)
            try:
                renewal = repository.insert_renewal(conn, renewal)
            except ConcurrentUpdate:  # another process's insert won (ux_ra_renewals_open_serial): take its
                existing = repository.open_renewal_of(conn, serial)
                if existing is None:
                    raise
                return existing
            repository.audit(conn, now, operator, "renewal_opened", renewal.id, f"serial={serial}")
        return renewal

    def confirm_renewal(self, serial: str, operator: str) -> Renewal:
        """The operator confirms the renewal of ``serial`` (opened first when need be); the notice
        goes out at once when the certificate expires within notice_days.

        Raises: StepRefused (as open_renewal; "confirmed_already": the renewal under way was
                confirmed before, as when the form is sent twice), CoreUnavailable; SettingsError:
                the notice would be due and the pages' address is not known (RaSettings.pages_url),
                before the confirmation is made.
        """
        renewal = self.open_renewal(serial, operator)
        if renewal.state is not State.AWAITING_CONFIRMATION:
            raise StepRefused(f"the renewal of {serial} was confirmed already (it is {renewal.state.value})",
                              reason="confirmed_already")
        if machine.notice_due(replace(renewal, state=State.CONFIRMED), self._clock.now(), self._settings.notice_days):
            self._settings.pages_url()  # the notice goes out at once: refused now rather than without its link
        renewal = self._step(renewal.id, operator, "renewal_confirmed",
                             lambda r, now, conn: machine.confirm(r, operator, now))
        self.run_notices()
        return self.get(renewal.id)

    def resend_notice(self, renewal_id: str, operator: str) -> Renewal:
        """E-mail the notice again with a new holder token (the holder lost it, or it leaked): the
        token before stops working.

        Raises: RenewalNotFound; StepRefused ("no_notice"): no notice sent yet, or the renewal is over;
                SettingsError: the pages' address, for the notice's link, is not known (RaSettings.pages_url).
        """
        pages = self._settings.pages_url()

        def resend(r, now, conn):
            if r.notice_sent_at is None or r.final:
                raise StepRefused(f"no notice of the renewal is sent again when it is {r.state.value}",
                                  reason="no_notice")
            token, token_hash = holder_token.new_token()
            moved = machine.new_holder_token(r, token_hash, now)
            subject, body = messages.renewal_notice(r.id, token, r.serial, r.profile, r.expires, public_url=pages)
            # A notice still waiting carries the token that stops working here: it is not sent after this one.
            repository.discard_waiting_emails(conn, r.id, subject)
            repository.queue_email(conn, now, r.emails, subject, body, discard_after=moved.holder_token_expires,
                                   renewal_id=r.id)
            return moved
        return self._step(renewal_id, operator, "notice_resent", resend)

    def reopen_limits(self, renewal_id: str, operator: str) -> Renewal:
        """An operator lets the holder go on past the per-renewal limits (the settings code_sends,
        code_failures, registry_lookups, face_comparisons): blocked addresses are unblocked and the
        counts of codes, wrong codes, registry lookups and face comparisons start again.

        Raises: RenewalNotFound; StepRefused ("renewal_over"): the renewal is over.
        """
        def reopen(r, now, conn):
            if r.final:
                raise StepRefused(f"the renewal is {r.state.value}: there is nothing to reopen", reason="renewal_over")
            repository.reset_holder_limits(conn, r.id)
            return r
        return self._step(renewal_id, operator, "limits_reopened", reopen)

    def check_holder(self, renewal_id: str, token: str, *, reading: bool = False) -> Renewal:
        """The renewal, when ``token`` is its holder token and still holds: before its expiry and
        while the renewal is under way (``reading``: its outcome may still be read).

        Raises: HolderNotAuthorised: for a missing renewal too, with one message for every case.
        """
        now = self._clock.now()
        with self._database.transaction() as conn:
            renewal = repository.find_renewal(conn, renewal_id)
        matches = holder_token.matches(token, renewal.holder_token_hash if renewal else "")
        if renewal is None or not machine.holder_may_call(renewal, matches, now, reading=reading):
            raise HolderNotAuthorised(NOT_AUTHORISED)
        return renewal

    def complete_in_person(self, renewal_id: str, operator: str, csr: bytes) -> Renewal:
        """At the counter, with the CSR made on the holder's card.

        Raises: as renew_in_person, with a reason for each of the RA's refusals: StepRefused
                ("not_in_person": completed already, as when the form is sent again, or at another
                step); OperationRefused ("csr_missing").
        """
        renewal = self.get(renewal_id)
        if renewal.state is not State.AWAITING_IN_PERSON:  # checked first: the core is not asked
            raise StepRefused(f"the renewal is {renewal.state.value}, not awaiting in-person processing",
                              reason="not_in_person")
        if not csr:
            raise OperationRefused("the certificate request (CSR) made on the holder's card is required",
                                   reason="csr_missing")
        return self.renew_in_person(renewal_id, csr, operator)

    # Background passes

    def run_notices(self) -> int:
        """E-mail the holders of confirmed renewals that are within notice_days of expiry.

        Raises: SettingsError: a notice is due and the pages' address, for its link, is not known
                (RaSettings.pages_url); none is sent.
        """
        now = self._clock.now()
        sent = 0
        due = [r for r in self.renewals((State.CONFIRMED,)) if machine.notice_due(r, now, self._settings.notice_days)]
        pages = self._settings.pages_url() if due else ""
        for renewal in due:
            def notice(r, now, conn):
                token, token_hash = holder_token.new_token()
                # first: refused if another pass gave it meanwhile
                moved = machine.give_notice(r, now, token_hash=token_hash)
                repository.queue_email(conn, now, r.emails,
                                       *messages.renewal_notice(r.id, token, r.serial, r.profile, r.expires,
                                                                public_url=pages),
                                       discard_after=moved.holder_token_expires,  # the token's end
                                       renewal_id=r.id)
                return moved
            try:
                self._step(renewal.id, SYSTEM, "notice_sent", notice)
            except (StepRefused, ConcurrentUpdate):
                continue  # another process (`signserver ra notices`, the server) was first
            sent += 1
        return sent

    def retry_registry(self) -> int:
        """Ask the registry again for the renewals waiting to match its data; returns how many
        got an answer."""
        answered = 0
        for renewal in self.renewals((State.WAITING_FOR_REGISTRY,)):
            if renewal.resume_step != Step.REGISTRY_MATCH:
                continue  # a photo is compared when the holder sends it again
            try:
                self.check_registry(renewal.id, actor=SYSTEM)
            except RaError as exc:
                log.info("a renewal's registry retry failed: %s", type(exc).__name__)
            if self.get(renewal.id).state is not State.WAITING_FOR_REGISTRY:
                answered += 1
        return answered

    # The holder's identity steps

    def record_consent(self, renewal_id: str) -> Renewal:
        reference = secrets.token_hex(8)
        return self._step(renewal_id, HOLDER, "consent_recorded",
                          lambda r, now, conn: machine.record_consent(r, reference, now))

    def send_code(self, renewal_id: str, address: str) -> bool:
        """E-mail a code to ``address``; False when the address needs none (verified for this renewal
        in the last reuse_days).

        Raises: RenewalNotFound; StepRefused: not an address of the certificate, or not the time;
                CodeRefused: the last code went out less than a minute ago, or the address is blocked
                (code_sends codes sent, or code_failures wrong codes typed, for this renewal).
        """
        now = self._clock.now()
        with self._database.transaction() as conn:
            # Locked: parallel requests take turns, so none slips past a limit (PostgreSQL).
            renewal = repository.get_renewal(conn, renewal_id, for_update=True)
            self._require_identity_phase(renewal, address)
            earlier = repository.verifications(conn, renewal_id, address)
            if any(codes.still_verified(v, now, self._settings.reuse_days) for v in earlier):
                return False
            if repository.code_limits_of(conn, renewal_id, address).blocked:
                raise CodeRefused(ADDRESS_BLOCKED, "blocked")
            if earlier and now - earlier[0].created_at < RESEND_AFTER:
                raise CodeRefused(f"a code was sent less than {RESEND_AFTER.seconds} seconds ago; use it or wait",
                                  "too_soon")
            # Each code allows code_attempts guesses: new codes on demand would allow any number.
            if not repository.count_code_sent(conn, renewal_id, address, self._settings.code_sends):
                raise CodeRefused(ADDRESS_BLOCKED, "blocked")
            verification, code = codes.issue(renewal_id, address, now, self._settings.code_seconds)
            repository.add_verification(conn, verification)
            repository.queue_email(conn, now, [address],
                                   *messages.verification_code(code, max(self._settings.code_seconds // 60, 1)),
                                   discard_after=verification.expires_at, renewal_id=renewal_id)
            repository.audit(conn, now, HOLDER, "code_sent", renewal_id, f"address={address}")
        return True

    def verify_code(self, renewal_id: str, address: str, code: str) -> None:
        """Raises: RenewalNotFound; StepRefused; CodeRefused: wrong, expired, no code asked, its
        attempts used up, or the address blocked (the code_failures-th wrong code blocks it)."""
        now = self._clock.now()
        refusal: CodeRefused | None = None
        with self._database.transaction() as conn:
            renewal = repository.get_renewal(conn, renewal_id, for_update=True)  # parallel guesses take turns
            self._require_identity_phase(renewal, address)
            if repository.code_limits_of(conn, renewal_id, address).blocked:
                raise CodeRefused(ADDRESS_BLOCKED, "blocked")
            latest = next(iter(repository.verifications(conn, renewal_id, address)), None)
            if latest is None:
                raise CodeRefused("no code was sent to this address; ask for one", "none")
            if latest.verified_at is not None:
                return
            try:
                counted, matched = codes.attempt(latest, code, now, self._settings.code_attempts)
            except CodeRefused as exc:
                refusal = exc
            else:
                if not repository.record_attempt(conn, counted, self._settings.code_attempts):
                    refusal = CodeRefused("too many wrong codes; ask for a new one", "used_up")
                elif matched:
                    repository.audit(conn, now, HOLDER, "code_verified", renewal_id, f"address={address}")
                else:
                    repository.audit(conn, now, HOLDER, "code_wrong", renewal_id, f"address={address}")
                    limits = repository.count_code_failure(conn, renewal_id, address, self._settings.code_failures,
                                                           now)
                    refusal = CodeRefused("the code is not the one sent", "wrong")
                    if limits.blocked:
                        repository.audit(conn, now, HOLDER, "address_blocked", renewal_id, f"address={address}")
                        refusal = CodeRefused(ADDRESS_BLOCKED, "blocked")
        if refusal is not None:  # raised after the commit, so the attempt stays counted
            raise refusal

    def unverified_emails(self, renewal: Renewal) -> list[str]:
        now = self._clock.now()
        with self._database.transaction() as conn:
            return [address for address in renewal.emails
                    if not any(codes.still_verified(v, now, self._settings.reuse_days)
                               for v in repository.verifications(conn, renewal.id, address))]

    def check_registry(self, renewal_id: str, actor: str = HOLDER) -> Renewal:
        """Fetch the holder's ID-card data (with the recorded consent) and compare them with the
        registered data.

        Raises: StepRefused: out of order, or the registry answered registry_lookups of the
                holder's lookups already; AC-AB-0014 when the data differ or the document expired
                (identity verification starts again, an e-mail is sent); refused outright for a
                non-Macau document that does not match. When the registry does not answer, or
                refuses the RA itself (RegistryRejected: its credentials), the renewal waits
                (waiting_for_registry) and is returned, the holder's lookup not counted.
        """
        renewal = self.get(renewal_id)
        machine.before_registry_match(renewal)
        holder = self._holder(renewal.account)
        registry = self._registry
        if actor == HOLDER:
            self._count_holder_request(renewal_id, "registry_lookups", "the identity registry was asked")
            registry = self._holder_registry
        try:
            record = registry.fetch_identity(holder.id_type, holder.id_number,
                                             consent_reference=renewal.consent_reference)
        except RegistryUnavailable:
            # No lookup was answered: "Try again" while the registry is down, or refuses the RA's
            # own credentials (an operator's fault, logged by the client), costs the holder none.
            if actor == HOLDER:
                self._give_back_holder_request(renewal_id, "registry_lookups")
            if renewal.state is State.WAITING_FOR_REGISTRY:
                return renewal  # still waiting: nothing new to record
            return self._save(renewal, actor, "registry_unavailable",
                              lambda r, now, conn: machine.registry_waiting(r, Step.REGISTRY_MATCH, now))
        except IdentityNotFound:
            record = None
        today = self._clock.now().date()
        differences = (["identity document not found"] if record is None
                       else machine.identity_differences(record, holder, today))
        if not differences:
            return self._save(renewal, actor, "registry_matched", lambda r, now, conn: machine.registry_matched(r, now))
        if record is not None and record.issuing_region != machine.MACAU:
            self._save(renewal, actor, "refused", lambda r, now, conn: machine.refuse(
                r, "the identity document is not a Macau one and its data do not match: renew in person", now,
                reason="identity_mismatch"))
            raise StepRefused("the identity document's data do not match the registered data; renew in person",
                              reason="identity_mismatch")
        self._identity_changed(renewal, actor, differences)
        raise StepRefused("the identity document's data changed or it expired: verify your identity again",
                          help_code=IDENTITY_DATA_CHANGED)

    def compare_face(self, renewal_id: str, photo: bytes) -> Renewal:
        """Compare ``photo``, told JPEG, PNG or TIFF by its bytes, with the registry's photo of the
        holder's document.

        Raises: StepRefused (out of order, a score below face_threshold, or the registry
        compared face_comparisons photos already); PhotoRefused (a photo refused here, before
        anything is counted: not JPEG, PNG or TIFF, empty or too large; or refused by the
        registry). When the registry does not answer, or refuses the RA itself, the renewal waits
        and is returned, the comparison not counted; the holder sends the photo again."""
        renewal = self.get(renewal_id)
        machine.before_face(renewal)
        holder = self._holder(renewal.account)
        # Told by its bytes, for the pages and the JSON API alike: a file's name and its declared
        # type are not evidence (a phone's PNG named photo.jpg is a PNG). A file the registry would
        # not take uses up no comparison.
        media_type = photo_media_type(photo)
        self._count_holder_request(renewal_id, "face_comparisons", "photos were compared")
        try:
            score = self._holder_registry.compare_face(holder.id_type, holder.id_number, photo, media_type)
        except RegistryUnavailable:
            self._give_back_holder_request(renewal_id, "face_comparisons")  # none answered, as for a lookup
            return self._save(renewal, HOLDER, "registry_unavailable",
                              lambda r, now, conn: machine.registry_waiting(r, Step.FACE, now))
        threshold = self._settings.face_threshold
        if score < threshold:
            now = self._clock.now()
            with self._database.transaction() as conn:
                repository.audit(conn, now, HOLDER, "face_below_threshold", renewal_id, f"score={score:.3f}")
        return self._save(renewal, HOLDER, "face_matched",
                          lambda r, now, conn: machine.face_compared(r, score, threshold, now),
                          detail=f"score={score:.3f}")

    def accept_agreement(self, renewal_id: str) -> Renewal:
        """To awaiting_application: the holder signs the application document next
        (ApplicationSteps). Raises: StepRefused."""
        renewal = self.get(renewal_id)
        unverified = self.unverified_emails(renewal)
        return self._save(renewal, HOLDER, "agreement_accepted",
                          lambda r, now, conn: machine.accept_agreement(r, unverified, now))

    def _count_holder_request(self, renewal_id: str, counter: str, what: str) -> None:
        """Raises: StepRefused: the holder made the renewal's limit of these requests."""
        limit = getattr(self._settings, counter)  # the setting of the counter's name
        now = self._clock.now()
        with self._database.transaction() as conn:
            if repository.count_holder_request(conn, renewal_id, counter, limit):
                return
            repository.audit(conn, now, HOLDER, "limit_reached", renewal_id, counter)
        raise StepRefused(f"{what} {limit} times for this renewal: ask the registration authority to reopen it, "
                          f"or renew in person", reason="limit_reached")

    def _give_back_holder_request(self, renewal_id: str, counter: str) -> None:
        """The registry did not answer a request _count_holder_request counted, or refused the RA
        itself: it counts no more. (Counted before the call, so that requests sent at once cannot
        all pass the limit.)"""
        with self._database.transaction() as conn:
            repository.give_back_holder_request(conn, renewal_id, counter)

    def _require_identity_phase(self, renewal: Renewal, address: str) -> None:
        if renewal.state not in (State.AWAITING_IDENTITY, State.WAITING_FOR_REGISTRY):
            raise StepRefused(f"e-mail addresses are verified while the identity is, not when {renewal.state.value}")
        if address not in renewal.emails:
            raise StepRefused("not an e-mail address of the certificate")


def view(renewal: Renewal, unverified: list[str] | None = None, provider: str = "") -> dict:
    """The renewal as the holder's and operator's JSON shows it."""
    pending = {State.AWAITING_IDENTITY: "identity", State.WAITING_FOR_REGISTRY: "identity",
               State.AWAITING_APPLICATION: "identity",
               State.AWAITING_ACTIVATION: "activation", State.ACTIVATING: "activation",
               State.AWAITING_IN_PERSON: "in_person"}.get(renewal.state, "")
    shown = {
        "id": renewal.id, "serial": renewal.serial, "account": renewal.account, "profile": renewal.profile,
        "expires": renewal.expires.isoformat(), "state": renewal.state.value, "pending_list": pending,
        "confirmed_by": renewal.confirmed_by,
        "steps": {"consent": renewal.consent_at is not None,
                  "registry_match": renewal.registry_checked_at is not None,
                  "face": renewal.face_score is not None, "agreement": renewal.agreement_at is not None,
                  "application": bool(renewal.application_sha256)},
        "application_sha256": renewal.application_sha256,
        "waiting_for": renewal.resume_step, "refusal": renewal.refusal,
        "refusal_reason": renewal.refusal_reason,
        "new_serial": renewal.new_serial,
        "new_expires": renewal.new_expires.isoformat() if renewal.new_expires else "",
        "help_code": renewal.help_code,
    }
    if unverified is not None:
        shown["unverified_emails"] = unverified
    if renewal.help_code:
        shown["guidance"] = help_code(renewal.help_code).guidance_by_language(provider)
    return shown
