"""The renewal of a certificate as a state machine (documents 002 and 003): pure domain, no I/O.

    awaiting_confirmation --operator confirms--> confirmed --notice e-mailed, notice_days before
    expiry--> awaiting_identity --consent, e-mail codes, registry match, face, agreement-->
    awaiting_activation (cloud-signature) --> activating --> activated
    awaiting_in_person (every other type) --operator--> completed_in_person
    waiting_for_registry: the registry did not answer; the step resumes when it does.
    refused: the registry's data refuse the renewal outright (a non-Macau identity document).

Each transition takes the renewal and the time, and returns the next renewal (frozen values);
a step out of order raises StepRefused with the reason "out_of_order" (a form sent twice, an old
page's form: a page says it in its reader's language). The caller persists the result atomically.
"""

from __future__ import annotations

import datetime
import enum
import re
from dataclasses import dataclass, field, replace

from signserver.ra.errors import StepRefused
from signserver.ra.help_codes import IDENTITY_DATA_CHANGED, ONLY_IN_PERSON

MACAU = "MO"
CLOUD_SIGNATURE = "cloud-signature"  # the profiles cloud-signature-government and -corporate
REVOCATION_PHRASE = re.compile(r"[A-Za-z0-9]{8,64}")
OUT_OF_ORDER = "out_of_order"  # errors.Refusal.reason of a step the renewal is not at
APPLICATION_SIGNING = "application_signing"  # errors.Refusal.reason: a signing of the application is under way


class State(enum.StrEnum):
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    CONFIRMED = "confirmed"
    AWAITING_IDENTITY = "awaiting_identity"
    AWAITING_APPLICATION = "awaiting_application"  # the agreement accepted; the application to sign
    WAITING_FOR_REGISTRY = "waiting_for_registry"
    AWAITING_ACTIVATION = "awaiting_activation"
    AWAITING_IN_PERSON = "awaiting_in_person"
    ACTIVATING = "activating"
    ACTIVATED = "activated"
    COMPLETED_IN_PERSON = "completed_in_person"
    REFUSED = "refused"


FINAL_STATES = frozenset({State.ACTIVATED, State.COMPLETED_IN_PERSON, State.REFUSED})


class Step(enum.StrEnum):
    """The identity steps that ask the registry (what a waiting renewal resumes)."""
    REGISTRY_MATCH = "registry_match"
    FACE = "face"


def is_cloud_signature(profile: str) -> bool:
    """Only cloud-signature certificates are activated online; every other type is done in person."""
    return profile.startswith(CLOUD_SIGNATURE)


@dataclass(frozen=True)
class Holder:
    """The holder's data as registered with the RA (at enrolment)."""
    account: str
    id_type: str
    id_number: str
    name: str
    birth_date: datetime.date
    emails: tuple[str, ...]


@dataclass(frozen=True)
class Renewal:
    id: str
    serial: str  # the certificate being renewed
    account: str
    profile: str
    expires: datetime.datetime  # the old certificate's notAfter
    state: State
    created_at: datetime.datetime
    updated_at: datetime.datetime
    version: int = 0  # optimistic concurrency: the store refuses a write based on an older version
    subject_name: str = ""  # the holder's registered name and addresses when the renewal was opened
    emails: tuple[str, ...] = ()
    confirmed_by: str = ""
    notice_sent_at: datetime.datetime | None = None
    consent_reference: str = ""
    consent_at: datetime.datetime | None = None
    registry_checked_at: datetime.datetime | None = None
    face_score: float | None = None
    agreement_at: datetime.datetime | None = None
    application_sha256: str = ""  # hex SHA-256 of the signed application document, sent to the core
    resume_step: str = ""  # the Step a renewal waiting for the registry resumes
    activation_reference: str = ""  # recorded before the core is asked: a restart finds the result
    new_serial: str = ""
    new_expires: datetime.datetime | None = None
    help_code: str = ""  # the last refusal's help code the holder should see
    refusal: str = ""  # the last refusal's sentence, for people (the audit, the API, the CLI)
    refusal_reason: str = ""  # its stable reason (errors.Refusal.reason): what a page reads
    holder_token_hash: str = field(default="", repr=False)  # SHA-256 of the holder's token (holder_token)
    holder_token_expires: datetime.datetime | None = None
    registry_lookups: int = 0  # the holder's registry lookups and face comparisons so far (limited)
    face_comparisons: int = 0
    application_signing_until: datetime.datetime | None = None  # a signing through the core under way until then

    @property
    def in_person(self) -> bool:
        return not is_cloud_signature(self.profile)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class ApplicationRecord:
    """A renewal's application document as the RA generated it for the agreement of ``agreed_at``,
    and, once the holder signed it, the signed PDF (``signed_with``: "cloud-signature" or "upload";
    ``signer``: the signing certificate's subject)."""
    renewal_id: str
    agreed_at: datetime.datetime
    document: bytes = field(repr=False)
    document_sha256: str
    created_at: datetime.datetime
    signed_document: bytes | None = field(default=None, repr=False)
    signed_sha256: str = ""
    signed_at: datetime.datetime | None = None
    signed_with: str = ""
    signer: str = ""


def _require(renewal: Renewal, action: str, *states: State) -> None:
    """Raises: StepRefused ("out_of_order"): the renewal is in none of ``states``."""
    if renewal.state not in states:
        wanted = " or ".join(s.value for s in states)
        raise StepRefused(f"cannot {action}: the renewal is {renewal.state.value}, not {wanted}",
                          reason=OUT_OF_ORDER)


def _moved(renewal: Renewal, now: datetime.datetime, **changes) -> Renewal:
    return replace(renewal, updated_at=now, **changes)


def open_renewal(renewal_id: str, *, serial: str, account: str, profile: str, expires: datetime.datetime,
                 holder: Holder, now: datetime.datetime) -> Renewal:
    """A renewal of certificate ``serial`` awaiting the operator's confirmation."""
    return Renewal(id=renewal_id, serial=serial, account=account, profile=profile, expires=expires,
                   state=State.AWAITING_CONFIRMATION, created_at=now, updated_at=now,
                   subject_name=holder.name, emails=holder.emails)


def confirm(renewal: Renewal, operator: str, now: datetime.datetime) -> Renewal:
    """The holder's organisation confirms the renewal. Raises: StepRefused."""
    _require(renewal, "confirm the renewal", State.AWAITING_CONFIRMATION)
    if not operator:
        raise StepRefused("a confirmation names the operator who gives it")
    return _moved(renewal, now, state=State.CONFIRMED, confirmed_by=operator)


def notice_due(renewal: Renewal, now: datetime.datetime, notice_days: int) -> bool:
    """Whether the holder is to be told now: confirmed, and within ``notice_days`` of expiry."""
    return renewal.state is State.CONFIRMED and now >= renewal.expires - datetime.timedelta(days=notice_days)


# How long a holder token outlives the old certificate (or the notice, when that comes later): a
# renewal may still be finishing, and its outcome read, after the old certificate expired (the
# core renews an expired certificate too).
HOLDER_TOKEN_GRACE = datetime.timedelta(days=30)


def holder_token_expiry(renewal: Renewal, now: datetime.datetime) -> datetime.datetime:
    """When a holder token given now for ``renewal`` ends."""
    return max(renewal.expires, now) + HOLDER_TOKEN_GRACE


def give_notice(renewal: Renewal, now: datetime.datetime, *, token_hash: str) -> Renewal:
    """The notice e-mail, with the holder's token, is queued: the holder may now verify the
    identity. The token holds until :func:`holder_token_expiry`.

    Raises: StepRefused.
    """
    _require(renewal, "send the renewal notice", State.CONFIRMED)
    return _moved(renewal, now, state=State.AWAITING_IDENTITY, notice_sent_at=now, holder_token_hash=token_hash,
                  holder_token_expires=holder_token_expiry(renewal, now))


def new_holder_token(renewal: Renewal, token_hash: str, now: datetime.datetime) -> Renewal:
    """The notice is sent again with a new token; the one before stops working.

    Raises: StepRefused ("no_notice"): no notice was sent yet, or the renewal is over.
    """
    if renewal.notice_sent_at is None or renewal.final:
        raise StepRefused(f"a new notice is sent for a renewal under way after its first notice, "
                          f"not one {renewal.state.value}", reason="no_notice")
    return _moved(renewal, now, holder_token_hash=token_hash, holder_token_expires=holder_token_expiry(renewal, now))


def holder_may_call(renewal: Renewal, token_matches: bool, now: datetime.datetime, *, reading: bool = False) -> bool:
    """Whether a holder's call with a token that ``token_matches`` the stored one is let through:
    until the token expires, and only while the renewal is under way (``reading``: its outcome may
    still be read)."""
    if not token_matches or renewal.holder_token_expires is None or now >= renewal.holder_token_expires:
        return False
    return reading or not renewal.final


def record_consent(renewal: Renewal, reference: str, now: datetime.datetime) -> Renewal:
    """The holder consents to the RA fetching the ID-card data. Raises: StepRefused."""
    _require(renewal, "record consent", State.AWAITING_IDENTITY)
    return _moved(renewal, now, consent_reference=reference, consent_at=now, help_code="")


def before_registry_match(renewal: Renewal) -> None:
    """Raises: StepRefused ("out_of_order"): not awaiting identity (or waiting to match), or no
    consent yet."""
    _require(renewal, "check the identity registry", State.AWAITING_IDENTITY, State.WAITING_FOR_REGISTRY)
    if renewal.state is State.WAITING_FOR_REGISTRY and renewal.resume_step != Step.REGISTRY_MATCH:
        raise StepRefused("the renewal waits to compare the photo, not to match the registry's data",
                          reason=OUT_OF_ORDER)
    if renewal.consent_at is None:
        raise StepRefused("the holder's consent to fetch the ID-card data comes first", reason=OUT_OF_ORDER)


def identity_differences(record, holder: Holder, today: datetime.date) -> list[str]:
    """What differs between the registry's ``record`` (an IdentityRecord) and the registered
    ``holder``, and whether the document has expired: an empty list when they agree."""
    differences = []
    if _normalised(record.name) != _normalised(holder.name):
        differences.append("name")
    if record.birth_date != holder.birth_date:
        differences.append("birth date")
    if (record.id_type, record.id_number) != (holder.id_type, holder.id_number):
        differences.append("identity document")
    if record.expires < today:
        differences.append("expired document")
    return differences


def _normalised(name: str) -> str:
    return " ".join(name.split()).casefold()


def registry_waiting(renewal: Renewal, step: Step, now: datetime.datetime) -> Renewal:
    """The registry did not answer: the renewal waits; the step resumes later, nothing lost."""
    return _moved(renewal, now, state=State.WAITING_FOR_REGISTRY, resume_step=step.value)


def registry_matched(renewal: Renewal, now: datetime.datetime) -> Renewal:
    before_registry_match(renewal)
    return _moved(renewal, now, state=State.AWAITING_IDENTITY, resume_step="", registry_checked_at=now,
                  help_code="")


def identity_changed(renewal: Renewal, differences: list[str], now: datetime.datetime) -> Renewal:
    """The registry's data differ or the document expired (AC-AB-0014): every identity step is
    asked again (e-mail codes verified in the last reuse_days excepted)."""
    return _moved(renewal, now, state=State.AWAITING_IDENTITY, resume_step="", consent_reference="",
                  consent_at=None, registry_checked_at=None, face_score=None, agreement_at=None,
                  application_sha256="", activation_reference="", help_code=IDENTITY_DATA_CHANGED,
                  refusal="identity data changed or expired: " + ", ".join(differences),
                  refusal_reason="identity_changed")


def refuse(renewal: Renewal, refusal: str, now: datetime.datetime, reason: str = "identity_mismatch") -> Renewal:
    """The renewal cannot go on online (a non-Macau identity document that does not match):
    ``refusal`` says why in a sentence, ``reason`` in a stable word (errors.Refusal.reason)."""
    return _moved(renewal, now, state=State.REFUSED, resume_step="", refusal=refusal, refusal_reason=reason)


def before_face(renewal: Renewal) -> None:
    """Raises: StepRefused ("out_of_order"): the registry's data have not matched yet."""
    _require(renewal, "compare the photo", State.AWAITING_IDENTITY, State.WAITING_FOR_REGISTRY)
    if renewal.state is State.WAITING_FOR_REGISTRY and renewal.resume_step != Step.FACE:
        raise StepRefused("the renewal waits to match the registry's data first", reason=OUT_OF_ORDER)
    if renewal.registry_checked_at is None:
        raise StepRefused("the registry's data must match before the photo is compared", reason=OUT_OF_ORDER)


def face_compared(renewal: Renewal, score: float, threshold: float, now: datetime.datetime) -> Renewal:
    """Record the face service's score. Raises: StepRefused: below ``threshold`` (the renewal stays
    where it is; the holder may try another photo)."""
    before_face(renewal)
    if score < threshold:
        raise StepRefused("the photo does not match the identity document's; try another photo",
                          reason="photo_mismatch")
    return _moved(renewal, now, state=State.AWAITING_IDENTITY, resume_step="", face_score=score)


def accept_agreement(renewal: Renewal, unverified_emails: list[str], now: datetime.datetime) -> Renewal:
    """The holder accepts the applicant/subscriber agreement: the application document is next.

    Raises: StepRefused: a step before it is missing ("out_of_order": consent, registry, face;
            "not_verified": e-mail codes).
    """
    _require(renewal, "accept the agreement", State.AWAITING_IDENTITY)
    if renewal.consent_at is None or renewal.registry_checked_at is None:
        raise StepRefused("consent and the registry's match come before the agreement", reason=OUT_OF_ORDER)
    if renewal.face_score is None:
        raise StepRefused("the photo comparison comes before the agreement", reason=OUT_OF_ORDER)
    if unverified_emails:
        raise StepRefused("these e-mail addresses are not verified yet: " + ", ".join(unverified_emails),
                          reason="not_verified")
    return _moved(renewal, now, state=State.AWAITING_APPLICATION, agreement_at=now, help_code="")


def before_application(renewal: Renewal) -> None:
    """Raises: StepRefused: the renewal does not await its signed application."""
    _require(renewal, "sign the application", State.AWAITING_APPLICATION)


def application_signing(renewal: Renewal, now: datetime.datetime) -> bool:
    """Whether a signing of the application through the core is under way at ``now`` (claimed, and
    not lapsed)."""
    return renewal.application_signing_until is not None and now < renewal.application_signing_until


def start_application_signing(renewal: Renewal, until: datetime.datetime, now: datetime.datetime) -> Renewal:
    """A signing of the application through the core begins: claimed until ``until``, when it
    lapses (the process that signs may stop before it records anything).

    Raises: StepRefused: not awaiting the application ("out_of_order"), or a signing of it is
            under way ("application_signing").
    """
    before_application(renewal)
    if application_signing(renewal, now):
        raise StepRefused("the application is being signed already; look at the renewal again in a moment",
                          reason=APPLICATION_SIGNING)
    return _moved(renewal, now, application_signing_until=until)


def application_signing_ended(renewal: Renewal, now: datetime.datetime) -> Renewal:
    """The signing under way ended without a signature (the core refused, or gave none): the
    holder may sign again."""
    return _moved(renewal, now, application_signing_until=None)


def application_signed(renewal: Renewal, sha256_hex: str, now: datetime.datetime) -> Renewal:
    """The holder signed the application document: identity verification is complete; to
    awaiting_activation (cloud-signature) or awaiting_in_person (help code AC-AB-0007). A signing
    claimed for it ends.

    Raises: StepRefused: not awaiting the application, or no digest.
    """
    before_application(renewal)
    if not re.fullmatch(r"[0-9a-f]{64}", sha256_hex or ""):
        raise StepRefused("a signed application is recorded with its SHA-256")
    if renewal.in_person:
        return _moved(renewal, now, state=State.AWAITING_IN_PERSON, application_sha256=sha256_hex,
                      help_code=ONLY_IN_PERSON, application_signing_until=None)
    return _moved(renewal, now, state=State.AWAITING_ACTIVATION, application_sha256=sha256_hex, help_code="",
                  application_signing_until=None)


def before_activation(renewal: Renewal) -> None:
    """Raises: StepRefused: an in-person type (AC-AB-0007), or not awaiting activation."""
    if renewal.in_person:
        raise StepRefused("only cloud-signature certificates are activated online; book an appointment",
                          help_code=ONLY_IN_PERSON)
    _require(renewal, "activate", State.AWAITING_ACTIVATION)


def start_activation(renewal: Renewal, reference: str, now: datetime.datetime) -> Renewal:
    before_activation(renewal)
    return _moved(renewal, now, state=State.ACTIVATING, activation_reference=reference, help_code="", refusal="",
                  refusal_reason="")


def activated(renewal: Renewal, new_serial: str, new_expires: datetime.datetime, now: datetime.datetime) -> Renewal:
    _require(renewal, "finish the activation", State.ACTIVATING)
    return _moved(renewal, now, state=State.ACTIVATED, new_serial=new_serial, new_expires=new_expires)


def activation_stopped(renewal: Renewal, refusal: str, now: datetime.datetime, help_code: str = "",
                       reason: str = "") -> Renewal:
    """The activation did not happen (refused by the core, or interrupted before the core was asked):
    the holder may activate again. ``refusal`` says why in a sentence, ``reason`` in a stable word
    (errors.Refusal.reason: the RA's own, or the core's, e.g. "AUTHENTICATION_FAILED").

    Raises: StepRefused: the renewal is not activating."""
    _require(renewal, "stop the activation", State.ACTIVATING)
    return _moved(renewal, now, state=State.AWAITING_ACTIVATION, activation_reference="", refusal=refusal,
                  refusal_reason=reason, help_code=help_code)


def complete_in_person(renewal: Renewal, operator: str, now: datetime.datetime) -> Renewal:
    """An operator completed the renewal at the counter. Raises: StepRefused."""
    _require(renewal, "complete in person", State.AWAITING_IN_PERSON)
    if not operator:
        raise StepRefused("a completion names the operator who gives it")
    return _moved(renewal, now, state=State.COMPLETED_IN_PERSON, confirmed_by=renewal.confirmed_by or operator,
                  help_code="")


def check_revocation_phrase(phrase: str) -> None:
    """Raises: StepRefused: not 8 to 64 letters and digits."""
    if not REVOCATION_PHRASE.fullmatch(phrase or ""):
        raise StepRefused("the revocation phrase is 8 to 64 letters and digits", reason="revocation_phrase")


def check_new_password(password: str, confirmation: str) -> None:
    """The documents' rules: at least 8 characters, a letter and a non-letter; typed twice alike.

    Raises: StepRefused (the message never repeats the password), its reason the rule broken:
            "confirmation_differs", "too_short", "no_letter" or "no_non_letter".
    """
    if password != confirmation:
        raise StepRefused("the new password and its confirmation differ", reason="confirmation_differs")
    broken = ("too_short" if len(password) < 8 else "no_letter" if not any(c.isalpha() for c in password)
              else "no_non_letter" if all(c.isalpha() for c in password) else "")
    if broken:
        raise StepRefused("a password has at least 8 characters, at least one letter and one non-letter",
                          reason=broken)
