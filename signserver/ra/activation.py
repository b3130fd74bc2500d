"""Online activation of a cloud-signature certificate: the holder's input checked, the request's
reference recorded before the core is asked, the renewal run in the background (the holder polls),
and, after a restart, each activation left half-done settled without a second certificate.

The password and the revocation phrase pass through in memory only: never in the database, the
audit trail or a log."""

from __future__ import annotations

import datetime
import logging
import uuid
from dataclasses import dataclass, field, replace

from signserver.ra import messages
from signserver.ra import renewal as machine
from signserver.ra.errors import (CoreUnavailable, IdentityNotFound, OperationRefused, RaError, RegistryUnavailable,
                                  StepRefused, core_error)
from signserver.ra.help_codes import REVOKE_FIRST
from signserver.ra.holder_sign_in import SIGN_IN_LIMITS
from signserver.ra.registry import MAX_BACKOFF_SECONDS
from signserver.ra.renewal import Renewal, State
from signserver.ra.steps import HOLDER, SYSTEM, RenewalSteps
from signserver.ra.store import repository
from signserver.ra.store import sessions as session_rows

log = logging.getLogger(__name__)

# How long an activation may still be running in some RA process (this one, or another on the same
# database): its registry lookup with every attempt and the longest pause between two, then up to
# four calls to the core (the renewal, and the successor's look-up after a refusal or a timeout,
# twice), each bounded by the client's timeout, and a margin for its turn in the executor and the
# database's waits. A resume pass leaves younger ones alone.
CORE_CALLS = 4
MARGIN = datetime.timedelta(seconds=20)
MAX_REFERENCE = 128


@dataclass(frozen=True)
class ActivationSecrets:
    password: str = field(default="", repr=False)  # the current cloud-signature password
    new_password: str = field(default="", repr=False)  # when the account holds no valid certificate
    revocation_phrase: str = field(default="", repr=False)
    # The holder's session on the pages that asked for the activation (ra_web_sessions.id_hash):
    # it stays signed in, to follow the activation, when a new password ends the others.
    asking_session: str = field(default="", repr=False)


class ActivationSteps(RenewalSteps):
    """Activation of the renewals awaiting it; the rest of the workflow builds on these steps."""

    def resume_activations(self) -> int:
        """After a restart: each renewal left activating is settled without a second certificate.
        The core is asked whether it renewed the certificate; if so the renewal is activated, else it
        awaits activation again (the holder's password was never stored, the holder enters it again).
        Only activations begun longer ago than they can run are taken (one running in another RA
        process is left to it); one that cannot be settled is logged and left for the next pass.
        Returns how many were settled."""
        settled = 0
        begun_before = self._clock.now() - self.activation_lifetime()
        for renewal in self.renewals((State.ACTIVATING,)):
            with self._running_lock:
                if renewal.id in self._running:
                    continue
            if renewal.updated_at > begun_before:
                continue  # perhaps still running elsewhere
            try:
                successor = self._successor(renewal)
                if successor is not None:
                    self._finish_activation(renewal.id, successor, None)
                else:
                    self._stop_activation(renewal.id, "the activation was interrupted; activate again",
                                          reason="interrupted")
            except RaError as exc:  # asked again at the next pass; the others go on
                log.warning("renewal %s: resuming its activation: %s: %s", renewal.id, type(exc).__name__, exc)
                continue
            settled += 1
        return settled

    def activation_lifetime(self) -> datetime.timedelta:
        """The longest an activation can run: what a resume pass waits before taking one over."""
        settings = self._settings
        attempts = max(settings.registry_attempts, 1)
        registry = settings.registry_timeout_seconds * attempts + MAX_BACKOFF_SECONDS * (attempts - 1)
        return datetime.timedelta(seconds=registry + CORE_CALLS * settings.core_timeout_seconds) + MARGIN

    def start_activation(self, renewal_id: str, given: ActivationSecrets, confirmation: str = "") -> Renewal:
        """Check the holder's input, record the request reference (before the core is asked, so a
        restart finds the result), and run the activation in the background; poll get().

        Raises: StepRefused: an in-person type (AC-AB-0007), not awaiting activation, a revocation
                phrase that is not 8-64 letters and digits, a new password against the rules.
        """
        renewal = self.get(renewal_id)
        machine.before_activation(renewal)
        machine.check_revocation_phrase(given.revocation_phrase)
        if given.new_password and given.password:
            raise StepRefused("enter the current password, or a new one when the account holds no valid "
                              "certificate, not both")
        if given.new_password:
            machine.check_new_password(given.new_password, confirmation)
        elif not given.password:
            raise StepRefused("enter the current cloud-signature password (or a new one when the account "
                              "holds no valid certificate)", reason="password_missing")
        reference = uuid.uuid4().hex
        # Marked running before the save: a resume pass in this process never sees it activating
        # and not running.
        with self._running_lock:
            self._running.add(renewal_id)
        try:
            renewal = self._save(renewal, HOLDER, "activation_started",
                                 lambda r, now, conn: machine.start_activation(r, reference, now),
                                 detail=f"reference={reference}")
            self._executor.submit(self._activate, renewal_id, given)
        except BaseException:
            with self._running_lock:
                self._running.discard(renewal_id)
            raise
        return renewal

    def _activate(self, renewal_id: str, given: ActivationSecrets) -> None:
        try:
            self.run_activation(renewal_id, given)
        except Exception:  # a background task: its outcome is the renewal's state
            log.exception("renewal %s: activation failed", renewal_id)
            try:
                self._stop_activation(renewal_id, "the activation failed; try again", reason="failed")
            except RaError:
                pass
        finally:
            with self._running_lock:
                self._running.discard(renewal_id)

    def run_activation(self, renewal_id: str, given: ActivationSecrets) -> Renewal:
        """The activation itself (background): re-check the identity (AC-AB-0014), the subject data
        (AC-AB-0015), then ask the core to renew, unless it already has for this renewal."""
        renewal = self.get(renewal_id)
        if renewal.state is not State.ACTIVATING:
            return renewal
        holder = self._holder(renewal.account)
        try:
            record = self._registry.fetch_identity(holder.id_type, holder.id_number,
                                                   consent_reference=renewal.consent_reference)
            differences = machine.identity_differences(record, holder, self._clock.now().date())
        except RegistryUnavailable:
            return self._stop_activation(renewal_id, "the identity registry does not answer; try again later",
                                         reason="registry_unavailable")
        except IdentityNotFound:
            differences = ["identity document not found"]
        if differences:
            return self._identity_changed(renewal, SYSTEM, differences)
        try:
            successor = self._successor(renewal)
            if successor is None:
                old = self._core(self._certificates.get_certificate, renewal.serial)
                now = self._clock.now()
                subject_changed = (holder.name != renewal.subject_name
                                   or tuple(holder.emails) != tuple(renewal.emails))
                if subject_changed and old.status == "valid" and (old.not_after is None or old.not_after > now):
                    return self._stop_activation(renewal_id, "the subject data changed: revoke the old "
                                                 "certificate first", help_code=REVOKE_FIRST,
                                                 reason="subject_changed")
                successor = self._renew(renewal, given)
        except CoreUnavailable:
            successor = self._successor_or_none(renewal)
            if successor is None:
                return self._stop_activation(renewal_id, "the certificate service does not answer; try again",
                                             reason="core_unavailable")
        except StepRefused as exc:
            return self._stop_activation(renewal_id, str(exc), help_code=exc.help_code, reason=exc.reason)
        return self._finish_activation(renewal_id, successor, given)

    def _renew(self, renewal: Renewal, given: ActivationSecrets):
        """Raises: CoreUnavailable; StepRefused: the core refused (its help code with it)."""
        from signserver.client import AlreadyRenewed, SignServerClientError

        try:
            return self._certificates.renew_certificate(
                renewal.serial, evidence=self._evidence(renewal, renewal.activation_reference),
                holder_password=given.password, new_password=given.new_password,
                revocation_phrase=given.revocation_phrase)
        except AlreadyRenewed:
            # Another activation of this renewal (another RA process, or one a resume pass took for
            # interrupted) renewed it meanwhile: that certificate is this renewal's.
            return self._renewed_already(renewal)
        except SignServerClientError as exc:
            raise core_error(exc, message=f"the certificate service refused the renewal: {exc.message}") from None

    def _renewed_already(self, renewal: Renewal):
        """The successor the core says ``renewal.serial`` has.

        Raises: CoreUnavailable; StepRefused ("ALREADY_RENEWED", the core's word: the successor was
                revoked meanwhile)."""
        successor = self._successor(renewal)
        if successor is None:  # revoked meanwhile: nothing of this renewal to finish with
            raise StepRefused(f"certificate {renewal.serial} was renewed already", reason="ALREADY_RENEWED")
        return successor

    def _evidence(self, renewal: Renewal, reference: str):
        """What the RA checked for this renewal, sent to the core with its renewal request."""
        from signserver.client.models import Evidence

        with self._database.transaction() as conn:
            # The notice sign-in's codes, kept beside them, went to every address at once: they
            # verify none.
            checked = [(v.address, v.verified_at) for v in repository.verifications(conn, renewal.id)
                       if v.verified_at is not None and v.address != SIGN_IN_LIMITS]
        matched = renewal.registry_checked_at
        return Evidence(registry_match=f"matched:{matched.isoformat()}" if matched else "",
                        face_score=renewal.face_score, email_verifications=tuple(checked),
                        application_sha256=bytes.fromhex(renewal.application_sha256) or None,
                        reference=reference[:MAX_REFERENCE])

    def _successor(self, renewal: Renewal):
        """The core's certificate renewing ``renewal.serial`` that is not revoked, if it issued one.

        Raises: CoreUnavailable, StepRefused."""
        issued = self._core(self._certificates.list_certificates, renewal.account)
        return next((c for c in issued if c.predecessor_serial == renewal.serial and c.status != "revoked"), None)

    def _successor_or_none(self, renewal: Renewal):
        try:
            return self._successor(renewal)
        except CoreUnavailable:
            return None

    def _finish_activation(self, renewal_id: str, successor, given: ActivationSecrets | None) -> Renewal:
        """Record the activation done and e-mail the holder. When it set a new password, every
        session of the holder on the pages but the asking one ends with the old password (as a
        change on the holder's /password page ends them); ``given`` None: it is not known whether
        it did (resumed after a restart), and the sessions end as if it had.

        Raises: RenewalNotFound, StepRefused, StoreUnavailable."""
        def finish(r, now, conn):
            repository.queue_email(conn, now, r.emails, *messages.activated(r.serial, r.expires, successor.serial,
                                                                           successor.not_after),
                                   renewal_id=r.id)
            if given is None or given.new_password:
                session_rows.end_sessions(conn, session_rows.HOLDER, r.account,
                                          keep_hash=given.asking_session if given is not None else "")
            return machine.activated(r, successor.serial, successor.not_after, now)
        return self._step(renewal_id, SYSTEM, "activated", finish, detail=f"new_serial={successor.serial}")

    def _stop_activation(self, renewal_id: str, refusal: str, *, reason: str, help_code: str = "") -> Renewal:
        """Record why the activation stopped: ``refusal`` in a sentence, ``reason`` in a stable word
        (errors.Refusal.reason), for the holder's page. Raises: RenewalNotFound, StepRefused."""
        return self._step(renewal_id, SYSTEM, "activation_stopped",
                          lambda r, now, conn: machine.activation_stopped(r, refusal, now, help_code, reason),
                          detail=f"reason={reason}" + (f" help_code={help_code}" if help_code else ""))

    # In person

    def renew_in_person(self, renewal_id: str, csr: bytes, operator: str) -> Renewal:
        """The operator completes at the counter a renewal awaiting it: the core renews the
        certificate with the key of ``csr`` (PEM or DER, made on the holder's card) and the evidence
        of the renewal's identity steps; the new serial is recorded and the holder e-mailed. Run
        again after a failure, it finishes with the certificate the core issued already.

        Raises: RenewalNotFound; StepRefused: not awaiting in-person processing; OperationRefused:
                no CSR, or the core refused (AC-AB-0015, a CSR reusing the old key, ...);
                CoreUnavailable.
        """
        from signserver.client import AlreadyRenewed, SignServerClientError

        renewal = self.get(renewal_id)
        if renewal.state is not State.AWAITING_IN_PERSON:
            machine.complete_in_person(renewal, operator, self._clock.now())  # raises StepRefused
        if not csr:
            raise OperationRefused("the certificate request (CSR) made on the holder's card is required")
        evidence = self._evidence(renewal, f"{renewal.id} operator={operator}")
        try:
            successor = self._certificates.renew_certificate(renewal.serial, evidence=evidence, csr=csr)
        except AlreadyRenewed:  # an earlier completion reached the core, not the RA's store
            successor = self._renewed_already(renewal)
        except SignServerClientError as exc:
            raise core_error(exc, OperationRefused,
                             f"the certificate service refused the renewal: {exc.message}") from None

        def complete(r, now, conn):
            repository.queue_email(conn, now, r.emails, *messages.activated(r.serial, r.expires, successor.serial,
                                                                           successor.not_after),
                                   renewal_id=r.id)
            return replace(machine.complete_in_person(r, operator, now), new_serial=successor.serial,
                           new_expires=successor.not_after)
        return self._step(renewal_id, operator, "completed_in_person", complete,
                          detail=f"new_serial={successor.serial}")
