"""Reading and writing the RA's rows as domain values. Every function works in the caller's
transaction (a Connection), so a renewal's new state, its audit entry and its e-mails commit
together."""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Iterable

from sqlalchemy import Connection, bindparam, case, delete, exists, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from signserver.clock import epoch_seconds, from_epoch
from signserver.ra.codes import CodeLimits, EmailVerification
from signserver.ra.errors import ConcurrentUpdate, RenewalNotFound
from signserver.ra.renewal import FINAL_STATES, ApplicationRecord, Holder, Renewal, State
from signserver.ra.store.schema import (OPEN_RENEWAL, applications, audit_trail, code_limits, email_verifications,
                                        holders, operator_accounts, outbox, pending_enrolments, renewals)

GENESIS = "0" * 64
AUDIT_CHAIN_LOCK = 0x5241_4155  # any constant of the RA's own


def _instant(value: datetime.datetime | None) -> int | None:
    return None if value is None else epoch_seconds(value)


def _moment(value: int | None) -> datetime.datetime | None:
    return None if value is None else from_epoch(value)


# Holders

def save_holder(conn: Connection, holder: Holder, now: datetime.datetime) -> None:
    values = {"id_type": holder.id_type, "id_number": holder.id_number, "name": holder.name,
              "birth_date": holder.birth_date.isoformat(), "emails": json.dumps(list(holder.emails)),
              "updated_at": epoch_seconds(now)}
    if conn.execute(update(holders).where(holders.c.account == holder.account).values(**values)).rowcount == 0:
        conn.execute(insert(holders).values(account=holder.account, **values))


def find_holder(conn: Connection, account: str) -> Holder | None:
    row = conn.execute(select(holders).where(holders.c.account == account)).first()
    if row is None:
        return None
    return Holder(row.account, row.id_type, row.id_number, row.name, datetime.date.fromisoformat(row.birth_date),
                  tuple(json.loads(row.emails)))


# Enrolments under way (never a secret: the holder's data, the request's reference, who and when)

def _holder_json(holder: Holder) -> str:
    return json.dumps({"id_type": holder.id_type, "id_number": holder.id_number, "name": holder.name,
                       "birth_date": holder.birth_date.isoformat(), "emails": list(holder.emails)},
                      ensure_ascii=False)


def add_pending_enrolment(conn: Connection, holder: Holder, reference: str, profile: str, operator: str,
                          now: datetime.datetime) -> dict | None:
    """Record the enrolment of ``holder`` as under way, unless one of the account is already;
    returns that earlier one (as pending_enrolments' items), else None."""
    earlier = find_pending_enrolment(conn, holder.account)
    if earlier is None:
        conn.execute(insert(pending_enrolments).values(account=holder.account, reference=reference, profile=profile,
                                                       holder=_holder_json(holder), operator=operator,
                                                       created_at=epoch_seconds(now)))
    return earlier


def find_pending_enrolment(conn: Connection, account: str) -> dict | None:
    row = conn.execute(select(pending_enrolments).where(pending_enrolments.c.account == account)).first()
    return None if row is None else _pending(row)


def remove_pending_enrolment(conn: Connection, account: str) -> bool:
    return bool(conn.execute(delete(pending_enrolments).where(pending_enrolments.c.account == account)).rowcount)


def list_pending_enrolments(conn: Connection) -> list[dict]:
    return [_pending(row) for row in conn.execute(select(pending_enrolments).order_by(pending_enrolments.c.created_at,
                                                                                      pending_enrolments.c.account))]


def _pending(row) -> dict:
    return {"account": row.account, "reference": row.reference, "profile": row.profile,
            "holder": json.loads(row.holder), "operator": row.operator, "created_at": from_epoch(row.created_at)}


# Renewals

def _renewal_values(renewal: Renewal) -> dict:
    return {
        "serial": renewal.serial, "account": renewal.account, "profile": renewal.profile,
        "expires": epoch_seconds(renewal.expires), "state": renewal.state.value,
        "subject_name": renewal.subject_name, "emails": json.dumps(list(renewal.emails)),
        "confirmed_by": renewal.confirmed_by, "notice_sent_at": _instant(renewal.notice_sent_at),
        "consent_reference": renewal.consent_reference, "consent_at": _instant(renewal.consent_at),
        "registry_checked_at": _instant(renewal.registry_checked_at), "face_score": renewal.face_score,
        "agreement_at": _instant(renewal.agreement_at),
        "application_sha256": renewal.application_sha256, "resume_step": renewal.resume_step,
        "activation_reference": renewal.activation_reference, "new_serial": renewal.new_serial,
        "new_expires": _instant(renewal.new_expires), "help_code": renewal.help_code,
        "refusal": renewal.refusal, "refusal_reason": renewal.refusal_reason,
        "created_at": epoch_seconds(renewal.created_at),
        "updated_at": epoch_seconds(renewal.updated_at), "holder_token_hash": renewal.holder_token_hash,
        "holder_token_expires": _instant(renewal.holder_token_expires),
        "application_signing_until": _instant(renewal.application_signing_until),
        # registry_lookups and face_comparisons: never written back (count_holder_request)
    }


def _renewal(row) -> Renewal:
    return Renewal(
        id=row.id, serial=row.serial, account=row.account, profile=row.profile, expires=from_epoch(row.expires),
        state=State(row.state), created_at=from_epoch(row.created_at), updated_at=from_epoch(row.updated_at),
        version=row.version, subject_name=row.subject_name, emails=tuple(json.loads(row.emails)),
        confirmed_by=row.confirmed_by, notice_sent_at=_moment(row.notice_sent_at),
        consent_reference=row.consent_reference, consent_at=_moment(row.consent_at),
        registry_checked_at=_moment(row.registry_checked_at), face_score=row.face_score,
        agreement_at=_moment(row.agreement_at),
        application_sha256=row.application_sha256, resume_step=row.resume_step,
        activation_reference=row.activation_reference, new_serial=row.new_serial,
        new_expires=_moment(row.new_expires), help_code=row.help_code, refusal=row.refusal,
        refusal_reason=row.refusal_reason,
        holder_token_hash=row.holder_token_hash, holder_token_expires=_moment(row.holder_token_expires),
        registry_lookups=row.registry_lookups, face_comparisons=row.face_comparisons,
        application_signing_until=_moment(row.application_signing_until))


def insert_renewal(conn: Connection, renewal: Renewal) -> Renewal:
    """Raises: ConcurrentUpdate: a renewal of the same certificate is already under way (one
    opened meanwhile: ux_ra_renewals_open_serial)."""
    try:
        with conn.begin_nested():  # the caller's transaction stays usable to read that renewal
            conn.execute(insert(renewals).values(id=renewal.id, version=1, **_renewal_values(renewal)))
    except IntegrityError:
        raise ConcurrentUpdate(f"a renewal of certificate {renewal.serial} was opened meanwhile") from None
    return get_renewal(conn, renewal.id)


def save_renewal(conn: Connection, renewal: Renewal) -> Renewal:
    """Write ``renewal`` over the version it was read at.

    Raises: ConcurrentUpdate: someone else wrote the renewal since (reload and try again).
    """
    result = conn.execute(update(renewals)
                          .where(renewals.c.id == renewal.id, renewals.c.version == renewal.version)
                          .values(version=renewal.version + 1, **_renewal_values(renewal)))
    if result.rowcount != 1:
        raise ConcurrentUpdate(f"renewal {renewal.id} changed meanwhile; try again")
    return get_renewal(conn, renewal.id)


def get_renewal(conn: Connection, renewal_id: str, *, for_update: bool = False) -> Renewal:
    """``for_update``: the renewal's row stays locked until the transaction ends (PostgreSQL;
    SQLite's writers take turns anyway), so read-then-write work on it takes turns.

    Raises: RenewalNotFound.
    """
    renewal = find_renewal(conn, renewal_id, for_update=for_update)
    if renewal is None:
        raise RenewalNotFound(f"no renewal {renewal_id}")
    return renewal


def find_renewal(conn: Connection, renewal_id: str, *, for_update: bool = False) -> Renewal | None:
    query = select(renewals).where(renewals.c.id == renewal_id)
    row = conn.execute(query.with_for_update() if for_update else query).first()
    return None if row is None else _renewal(row)


def count_holder_request(conn: Connection, renewal_id: str, counter: str, limit: int) -> bool:
    """Count one more of the holder's requests in ``counter`` ("registry_lookups" or
    "face_comparisons"): False, counting nothing, when ``limit`` have been made already. One
    atomic UPDATE, so parallel requests cannot both take the last one."""
    column = renewals.c[counter]
    return conn.execute(update(renewals).where(renewals.c.id == renewal_id, column < limit)
                        .values({column: column + 1})).rowcount == 1


def give_back_holder_request(conn: Connection, renewal_id: str, counter: str) -> None:
    """One of the holder's requests counted in ``counter`` got no answer from the registry: it
    counts no more (never below 0, as after an operator reopened the limits meanwhile)."""
    column = renewals.c[counter]
    conn.execute(update(renewals).where(renewals.c.id == renewal_id, column > 0).values({column: column - 1}))


def reset_holder_limits(conn: Connection, renewal_id: str) -> None:
    """An operator reopened the renewal: its counters and its blocked addresses start again."""
    conn.execute(update(renewals).where(renewals.c.id == renewal_id).values(registry_lookups=0, face_comparisons=0))
    conn.execute(update(code_limits).where(code_limits.c.renewal_id == renewal_id)
                 .values(codes_sent=0, failures=0, blocked_at=None))


def open_renewal_of(conn: Connection, serial: str) -> Renewal | None:
    """The renewal of certificate ``serial`` still under way, if any."""
    row = conn.execute(select(renewals).where(renewals.c.serial == serial,
                                              renewals.c.state.not_in([s.value for s in FINAL_STATES]))
                       .order_by(renewals.c.created_at.desc())).first()
    return None if row is None else _renewal(row)


def list_renewals(conn: Connection, *, states: Iterable[State] = (), account: str = "") -> list[Renewal]:
    query = select(renewals).order_by(renewals.c.created_at, renewals.c.id)
    states = [s.value for s in states]
    if states:
        query = query.where(renewals.c.state.in_(states))
    if account:
        query = query.where(renewals.c.account == account)
    return [_renewal(row) for row in conn.execute(query)]


# Application documents

def save_application(conn: Connection, record: ApplicationRecord) -> None:
    """Insert or replace the renewal's application document (and its signed copy)."""
    values = {"agreed_at": epoch_seconds(record.agreed_at), "document": record.document,
              "document_sha256": record.document_sha256, "created_at": epoch_seconds(record.created_at),
              "signed_document": record.signed_document, "signed_sha256": record.signed_sha256,
              "signed_at": _instant(record.signed_at), "signed_with": record.signed_with, "signer": record.signer}
    if conn.execute(update(applications).where(applications.c.renewal_id == record.renewal_id)
                    .values(**values)).rowcount == 0:
        conn.execute(insert(applications).values(renewal_id=record.renewal_id, **values))


def find_application(conn: Connection, renewal_id: str) -> ApplicationRecord | None:
    row = conn.execute(select(applications).where(applications.c.renewal_id == renewal_id)).first()
    if row is None:
        return None
    return ApplicationRecord(renewal_id=row.renewal_id, agreed_at=from_epoch(row.agreed_at), document=row.document,
                             document_sha256=row.document_sha256, created_at=from_epoch(row.created_at),
                             signed_document=row.signed_document, signed_sha256=row.signed_sha256,
                             signed_at=_moment(row.signed_at), signed_with=row.signed_with, signer=row.signer)


# E-mail verifications

def _verification(row) -> EmailVerification:
    return EmailVerification(row.id, row.renewal_id, row.address, row.code_hash, row.salt, from_epoch(row.created_at),
                             from_epoch(row.expires_at), row.attempts, _moment(row.verified_at))


def add_verification(conn: Connection, verification: EmailVerification) -> int:
    """Returns the new verification's id."""
    return conn.execute(insert(email_verifications).values(
        renewal_id=verification.renewal_id, address=verification.address, code_hash=verification.code_hash,
        salt=verification.salt, created_at=epoch_seconds(verification.created_at),
        expires_at=epoch_seconds(verification.expires_at), attempts=verification.attempts,
        verified_at=_instant(verification.verified_at))).inserted_primary_key[0]


def find_verification(conn: Connection, verification_id: int) -> EmailVerification | None:
    row = conn.execute(select(email_verifications).where(email_verifications.c.id == verification_id)).first()
    return None if row is None else _verification(row)


def record_attempt(conn: Connection, verification: EmailVerification, max_attempts: int) -> bool:
    """Count one attempt at ``verification``'s code (and its success: ``verified_at``): False,
    counting nothing, when ``max_attempts`` were made already or it is verified. Counted in the
    database (attempts + 1), never from the value read, so parallel guesses are all counted."""
    table = email_verifications
    return conn.execute(update(table).where(table.c.id == verification.id, table.c.attempts < max_attempts,
                                            table.c.verified_at.is_(None))
                        .values(attempts=table.c.attempts + 1,
                                verified_at=_instant(verification.verified_at))).rowcount == 1


def _code_limits_where(renewal_id: str, address: str):
    return (code_limits.c.renewal_id == renewal_id) & (code_limits.c.address == address)


def code_limits_of(conn: Connection, renewal_id: str, address: str) -> CodeLimits:
    """The codes sent to ``address`` for the renewal and the wrong codes typed, in total."""
    row = conn.execute(select(code_limits).where(_code_limits_where(renewal_id, address))).first()
    if row is None:
        return CodeLimits()
    return CodeLimits(row.codes_sent, row.failures, _moment(row.blocked_at))


def _ensure_code_limits(conn: Connection, renewal_id: str, address: str) -> None:
    # Called with the renewal's row locked (get_renewal for_update): no one inserts it meanwhile.
    if conn.execute(select(func.count()).select_from(code_limits)
                    .where(_code_limits_where(renewal_id, address))).scalar() == 0:
        conn.execute(insert(code_limits).values(renewal_id=renewal_id, address=address, codes_sent=0, failures=0))


def count_code_sent(conn: Connection, renewal_id: str, address: str, limit: int) -> bool:
    """Count one more code sent to ``address``: False, counting nothing, when ``limit`` were sent
    already or the address is blocked. Call with the renewal's row locked."""
    _ensure_code_limits(conn, renewal_id, address)
    return conn.execute(update(code_limits)
                        .where(_code_limits_where(renewal_id, address), code_limits.c.codes_sent < limit,
                               code_limits.c.blocked_at.is_(None))
                        .values(codes_sent=code_limits.c.codes_sent + 1)).rowcount == 1


def reset_codes_sent(conn: Connection, renewal_id: str, address: str) -> None:
    """The codes sent to ``address`` start counting again (a code was used to sign in); the wrong
    codes typed, and a block, stay."""
    conn.execute(update(code_limits).where(_code_limits_where(renewal_id, address)).values(codes_sent=0))


def count_code_failure(conn: Connection, renewal_id: str, address: str, limit: int,
                       now: datetime.datetime) -> CodeLimits:
    """Count one more wrong code for ``address``; the address is blocked at the ``limit``-th.
    Call with the renewal's row locked. Returns the limits as they now are."""
    _ensure_code_limits(conn, renewal_id, address)
    where = _code_limits_where(renewal_id, address)
    conn.execute(update(code_limits).where(where).values(failures=code_limits.c.failures + 1))
    conn.execute(update(code_limits).where(where, code_limits.c.failures >= limit, code_limits.c.blocked_at.is_(None))
                 .values(blocked_at=epoch_seconds(now)))
    return code_limits_of(conn, renewal_id, address)


def block_address(conn: Connection, renewal_id: str, address: str, now: datetime.datetime) -> None:
    _ensure_code_limits(conn, renewal_id, address)
    conn.execute(update(code_limits).where(_code_limits_where(renewal_id, address), code_limits.c.blocked_at.is_(None))
                 .values(blocked_at=epoch_seconds(now)))


def verifications(conn: Connection, renewal_id: str, address: str | None = None) -> list[EmailVerification]:
    """The renewal's verifications, newest first."""
    query = select(email_verifications).where(email_verifications.c.renewal_id == renewal_id)
    if address is not None:
        query = query.where(email_verifications.c.address == address)
    return [_verification(row) for row in conn.execute(query.order_by(email_verifications.c.id.desc()))]


# Audit trail

def _entry_hash(previous: str, at: int, actor: str, action: str, renewal_id: str, detail: str) -> str:
    material = json.dumps([previous, at, actor, action, renewal_id, detail], ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def audit(conn: Connection, now: datetime.datetime, actor: str, action: str, renewal_id: str = "",
          detail: str = "") -> None:
    """Append an entry, chained to the last one. Never pass a secret in ``detail``."""
    if conn.dialect.name == "postgresql":
        # Appenders take turns until they commit, or two would chain to the same last entry
        # (SQLite's writers already take turns: BEGIN IMMEDIATE).
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_CHAIN_LOCK})
    last = conn.execute(select(audit_trail.c.hash).order_by(audit_trail.c.id.desc()).limit(1)).scalar()
    previous = last or GENESIS
    at = epoch_seconds(now)
    conn.execute(insert(audit_trail).values(at=at, actor=actor, action=action, renewal_id=renewal_id, detail=detail,
                                            previous_hash=previous,
                                            hash=_entry_hash(previous, at, actor, action, renewal_id, detail)))


def audit_entries(conn: Connection, renewal_id: str = "") -> list[dict]:
    query = select(audit_trail).order_by(audit_trail.c.id)
    if renewal_id:
        query = query.where(audit_trail.c.renewal_id == renewal_id)
    return [dict(row._mapping) for row in conn.execute(query)]


def verify_trail(conn: Connection) -> int | None:
    """The id of the first entry that breaks the chain, or None when the trail is whole."""
    previous = GENESIS
    for row in conn.execute(select(audit_trail).order_by(audit_trail.c.id)):
        expected = _entry_hash(previous, row.at, row.actor, row.action, row.renewal_id, row.detail)
        if row.previous_hash != previous or row.hash != expected:
            return row.id
        previous = row.hash
    return None


# Outbox

def queue_email(conn: Connection, now: datetime.datetime, recipients: Iterable[str], subject: str, body: str,
                discard_after: datetime.datetime | None = None, *, renewal_id: str = "") -> int:
    """``discard_after``: the message is of no use after then (a code's expiry): deleted unsent.
    ``renewal_id``: the renewal the message is about (the operators reach its holder from a
    message given up)."""
    rows = [{"created_at": epoch_seconds(now), "recipient": r, "subject": subject, "body": body, "attempts": 0,
             "next_attempt_at": epoch_seconds(now), "discard_after": _instant(discard_after),
             "renewal_id": renewal_id or None} for r in recipients]
    if rows:
        conn.execute(insert(outbox), rows)
    return len(rows)


def discard_waiting_emails(conn: Connection, renewal_id: str, subject: str) -> int:
    """Delete the messages about ``renewal_id`` with that ``subject`` not sent yet, and not given
    up (those stay for the operators). Returns how many."""
    return conn.execute(delete(outbox).where(outbox.c.renewal_id == renewal_id, outbox.c.subject == subject,
                                             outbox.c.given_up_at.is_(None))).rowcount


# A message waits while an earlier one to its address is still to go and not due now (put off after
# a failure, or being sent by another RA process). Built once, as the core's sender's: every
# background round runs it.
_EARLIER = outbox.alias("earlier")
_IN_TURN = ~exists().where(_EARLIER.c.recipient == outbox.c.recipient, _EARLIER.c.id < outbox.c.id,
                           _EARLIER.c.given_up_at.is_(None), _EARLIER.c.next_attempt_at > bindparam("now"))
_DUE = (select(outbox).where(outbox.c.given_up_at.is_(None), outbox.c.next_attempt_at <= bindparam("now"), _IN_TURN)
        .order_by(outbox.c.id).limit(bindparam("most")))


def due_emails(conn: Connection, now: datetime.datetime, limit: int = 50) -> list:
    """At most ``limit`` messages due at ``now``, oldest first, each in its address's turn (above),
    so that a holder reads them in the order they were written; those due together go in one round
    in that order (SendingRound.send_claimed holds back the ones behind a refusal). A sent message
    is deleted, one past its use dropped, one given up no longer waited for."""
    return list(conn.execute(_DUE, {"now": epoch_seconds(now), "most": limit}))


# A message given up stays listed this long for the operators (the dashboard, `signserver ra outbox`).
GIVEN_UP_KEPT_SECONDS = 30 * 86_400


def discard_stale_emails(conn: Connection, now: datetime.datetime,
                         given_up_kept_seconds: int = GIVEN_UP_KEPT_SECONDS) -> int:
    """Delete the messages still waiting past their ``discard_after``, and those given up more
    than ``given_up_kept_seconds`` ago; returns how many."""
    moment = epoch_seconds(now)
    stale = conn.execute(delete(outbox).where(outbox.c.given_up_at.is_(None), outbox.c.discard_after.is_not(None),
                                              outbox.c.discard_after <= moment)).rowcount
    conn.execute(delete(outbox).where(outbox.c.given_up_at <= moment - given_up_kept_seconds))
    return stale


def email_given_up(conn: Connection, message_id: int, attempts: int, now: datetime.datetime,
                   last_error: str) -> None:
    """The message will not be sent: it stays listed for the operators with why (never the body,
    never a secret), and its body, which may carry a code or a holder's link, is erased."""
    conn.execute(update(outbox).where(outbox.c.id == message_id)
                 .values(attempts=attempts, given_up_at=epoch_seconds(now), last_error=last_error, body=""))


def email_sent(conn: Connection, message_id: int) -> None:
    conn.execute(delete(outbox).where(outbox.c.id == message_id))


def email_failed(conn: Connection, message_id: int, attempts: int, next_attempt: datetime.datetime,
                 last_error: str = "") -> None:
    """Count a failed attempt; ``last_error`` says why (never the body, never a secret)."""
    conn.execute(update(outbox).where(outbox.c.id == message_id)
                 .values(attempts=attempts, next_attempt_at=epoch_seconds(next_attempt), last_error=last_error))


_LISTED = (outbox.c.id, outbox.c.created_at, outbox.c.recipient, outbox.c.subject, outbox.c.attempts,
           outbox.c.next_attempt_at, outbox.c.last_error, outbox.c.given_up_at, outbox.c.renewal_id,
           outbox.c.dismissed_at, outbox.c.dismissed_by, renewals.c.account)
# The ids of the outbox (an Integer column): a larger number names no message, and is never put to
# the database (SQLite cannot bind it, PostgreSQL refuses it).
MAX_OUTBOX_ID = 2 ** 31 - 1


def _listed():
    """The listed columns, with the account of the message's renewal (None when it names none)."""
    return select(*_LISTED).select_from(outbox.outerjoin(renewals, renewals.c.id == outbox.c.renewal_id))


def _unsent(row) -> dict:
    given_up = row.given_up_at is not None
    return {"id": row.id, "created_at": from_epoch(row.created_at), "recipient": row.recipient,
            "subject": row.subject, "attempts": row.attempts,
            "next_attempt_at": None if given_up else from_epoch(row.next_attempt_at),
            "last_error": row.last_error, "given_up_at": _moment(row.given_up_at), "renewal_id": row.renewal_id,
            "account": row.account, "dismissed_at": _moment(row.dismissed_at), "dismissed_by": row.dismissed_by}


def unsent_emails(conn: Connection) -> list[dict]:
    """The outbox for the operators: each message's recipient, subject, attempts, next attempt
    (None once given up), last error, when it was given up (None while it waits), the renewal it
    is about and that renewal's account (None when unknown), and when and by whom a message given
    up was marked dealt with (None until then); never its body (a code, a holder's link)."""
    return [_unsent(row) for row in conn.execute(_listed().order_by(outbox.c.id))]


def outbox_state(conn: Connection, given_up_shown: int = 20) -> dict:
    """The outbox at a glance, for the operators' dashboard: ``waiting`` (messages still to be
    sent), ``failing`` (of those, the ones an attempt failed for), ``oldest_waiting`` (when the
    oldest waiting message was queued, or None), ``given_up`` (how many were given up and not yet
    marked dealt with), ``dismissed`` (how many given up were marked dealt with) and
    ``given_up_recent`` (the latest ``given_up_shown`` of those not dealt with, as unsent_emails
    lists them)."""
    waiting_rows = outbox.c.given_up_at.is_(None)
    waiting, failing, oldest = conn.execute(
        select(func.count(), func.coalesce(func.sum(case((outbox.c.attempts > 0, 1), else_=0)), 0),
               func.min(outbox.c.created_at))
        .where(waiting_rows)).one()
    open_rows = outbox.c.given_up_at.is_not(None) & outbox.c.dismissed_at.is_(None)
    given_up = conn.execute(select(func.count()).where(open_rows)).scalar_one()
    dismissed = conn.execute(select(func.count()).where(outbox.c.dismissed_at.is_not(None))).scalar_one()
    recent = [_unsent(row) for row in conn.execute(_listed().where(open_rows)
                                                   .order_by(outbox.c.given_up_at.desc(), outbox.c.id.desc())
                                                   .limit(given_up_shown))]
    return {"waiting": waiting, "failing": failing, "oldest_waiting": _moment(oldest), "given_up": given_up,
            "dismissed": dismissed, "given_up_recent": recent}


def find_email(conn: Connection, message_id: int) -> dict | None:
    """The message ``message_id`` as unsent_emails lists it, or None (no such message)."""
    if not 0 < message_id <= MAX_OUTBOX_ID:
        return None
    row = conn.execute(_listed().where(outbox.c.id == message_id)).first()
    return None if row is None else _unsent(row)


def dismiss_email(conn: Connection, message_id: int, operator: str, now: datetime.datetime) -> bool:
    """Mark the message given up ``message_id`` dealt with by ``operator``: False, changing
    nothing, when there is no such message, it was not given up, or it was marked already (one
    UPDATE, so of two operators marking it at once one does)."""
    if not 0 < message_id <= MAX_OUTBOX_ID:
        return False
    return conn.execute(update(outbox).where(outbox.c.id == message_id, outbox.c.given_up_at.is_not(None),
                                             outbox.c.dismissed_at.is_(None))
                        .values(dismissed_at=epoch_seconds(now), dismissed_by=operator)).rowcount == 1


# The notice link's sign-in (signserver/ra/holder_sign_in.py)

def renewals_listing_address(conn: Connection, address: str) -> list[Renewal]:
    """The renewals under way whose addresses include ``address`` (compared case-insensitively),
    locked for update (PostgreSQL)."""
    wanted = address.casefold()
    pattern = "%" + wanted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    query = (select(renewals).where(renewals.c.state.not_in([s.value for s in FINAL_STATES]))
             .order_by(renewals.c.created_at).with_for_update())
    if wanted.isascii() and not set(wanted) & {'"', "\\"}:  # JSON escapes the others: no narrowing then
        query = query.where(func.lower(renewals.c.emails).like(pattern, escape="\\"))
    found = [_renewal(row) for row in conn.execute(query)]
    return [r for r in found if any(a.casefold() == wanted for a in r.emails)]


# Operator accounts (signserver/ra/operator_accounts.py): rows as they are (the module makes the
# values); the sign-in failures are kept by signserver/ra/operator_lockout.py.


def insert_operator(conn: Connection, values: dict) -> bool:
    """False when an operator of that name exists already."""
    if conn.execute(select(operator_accounts.c.name).where(operator_accounts.c.name == values["name"])).first():
        return False
    try:
        with conn.begin_nested():
            conn.execute(insert(operator_accounts).values(**values))
    except IntegrityError:  # added meanwhile (PostgreSQL: the check above does not lock an absent row)
        return False
    return True


def find_operator(conn: Connection, name: str, *, for_update: bool = False):
    query = select(operator_accounts).where(operator_accounts.c.name == name)
    return conn.execute(query.with_for_update() if for_update else query).first()


def list_operators(conn: Connection) -> list:
    return list(conn.execute(select(operator_accounts).order_by(operator_accounts.c.name)))


def update_operator(conn: Connection, name: str, **values) -> bool:
    """False when there is no operator of that name."""
    return conn.execute(update(operator_accounts).where(operator_accounts.c.name == name).values(**values)).rowcount > 0


def operator_signed_in(conn: Connection, name: str, otp_step: int) -> bool:
    """The attempt succeeded with the one-time password of ``otp_step``. False (nothing changed)
    when that step or a later one was used already: a replayed password."""
    c = operator_accounts.c
    return conn.execute(update(operator_accounts)
                        .where(c.name == name, (c.last_otp_step.is_(None)) | (c.last_otp_step < otp_step))
                        .values(last_otp_step=otp_step)).rowcount > 0


# The operators' dashboard (signserver/ra/web/operator_pages.py)

def renewals_with_blocked_addresses(conn: Connection, renewal_ids: Iterable[str]) -> set[str]:
    """Those of ``renewal_ids`` with an e-mail address blocked after too many codes or wrong codes
    (an operator may reopen them): asked of the renewals listed, by the table's key, since the
    blocked addresses of every renewal ever made grow with the RA's history."""
    wanted = sorted(set(renewal_ids))
    if not wanted:
        return set()
    return set(conn.execute(select(code_limits.c.renewal_id)
                            .where(code_limits.c.renewal_id.in_(wanted), code_limits.c.blocked_at.is_not(None))
                            .distinct()).scalars())


def serials_with_open_renewal(conn: Connection, serials: Iterable[str]) -> set[str]:
    """Those of ``serials`` whose certificate has a renewal under way (not finished). Read through
    the index of the open renewals (its condition is the query's), never from the finished ones,
    which the RA keeps for good: a national RA's history grows by hundreds of thousands a year."""
    wanted = sorted(set(serials))
    if not wanted:
        return set()
    return set(conn.execute(select(renewals.c.serial).where(renewals.c.serial.in_(wanted), OPEN_RENEWAL)).scalars())
