"""On PostgreSQL, a SignHash's writes in one round trip: the database function
``spend_activation_token`` (migration 0019, as 0026 replaced it) checks that the credential is
still as the worker found it usable, takes the digests (only while the token holds and its account
is active), reads what opening the package takes, counts the token down and appends the audit
records, as one transaction of its own.

A transaction of statements took six round trips (BEGIN, four statements, COMMIT), each the
worker's driver's work and a message for PostgreSQL, and the audit chain's head, which every
signature locks, stayed locked until the COMMIT came back. Now a SignHash waits for one round trip
when the worker found the credential usable lately (signserver/signing/recent_credentials.py), two
when it reads it first (`tests/signing/test_round_trips.py`). On SQLite the same statements run in
the caller's transaction: there is no round trip to save.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from sqlalchemy import BigInteger, Connection, Integer, LargeBinary, String, text
from sqlalchemy.exc import DBAPIError

from signserver.accounts.packages import PACKAGE_NOT_AVAILABLE
from signserver.audit.log import canonical_detail, record_tail
from signserver.clock import epoch_seconds
from signserver.errors import CredentialUnusable, InvalidArgument
from signserver.hsm.algorithms import HashAlgorithm
from signserver.store.arrays import TextArray
from signserver.store.prepared import PreparedStatement

# The function's SQLSTATEs; each leaves everything as it was.
NOT_TAKEN = "SSA01"  # not every digest was there to take (or none was asked)
NO_PACKAGE = "SSA02"  # the token carries no package to open
CREDENTIAL_CHANGED = "SSA03"  # the credential is no longer as the caller checked it

_SPEND = PreparedStatement(text("""
    SELECT * FROM spend_activation_token(
        :token_hash, :credential_id, :key_id, :certificate_serial, :application_id, :hash_algorithm, :now,
        CAST(:digests AS TEXT[]), :open_key, :count_down, :at, :event, :actor, :subject, CAST(:details AS TEXT[]),
        CAST(:tails AS TEXT[]))""").columns(
    last_seq=BigInteger, sealed_key=LargeBinary, expires_at=BigInteger, unspent=Integer, algorithm=String,
    wrapped_package_key=LargeBinary, master_label=String, mechanism=String))


class DigestsNotTaken(Exception):
    """Not every digest could be taken under the token: nothing was changed; the reason is for
    ``activation.explain_refusal`` to find."""


class CredentialChanged(Exception):
    """The credential is no longer active with that key and newest certificate, or that
    certificate is no longer valid: nothing was changed; read the credential again."""


@dataclass(frozen=True)
class Record:
    """The audit records of the signatures: one per detail, same event, actor and subject."""

    event: str
    actor: str
    subject: str
    details: list[dict]


def spend_and_record(conn: Connection, *, token_hash: str, credential_id: str, key_id: str,
                     certificate_serial: str | None, application_id: int, algorithm: HashAlgorithm,
                     digests: list[bytes], open_key: bool, count_down: bool, record: Record,
                     now: datetime.datetime):
    """Spend ``digests`` of the token and append ``record``'s audit records, committed together
    (``conn`` from ``Database.statements``), if the credential is still active with ``key_id``
    and its newest certificate is still ``certificate_serial`` (None: none yet), valid and
    unexpired: as the caller found it usable. ``open_key``: also read what opening the package
    takes; ``count_down``: lower the token's count of unspent digests (a package's token).

    Returns a row: ``last_seq`` and, with ``open_key``, the columns ``key_to_open_from`` reads.

    Raises: CredentialChanged; DigestsNotTaken; CredentialUnusable: ``open_key`` and the token
        carries no package; InvalidArgument: no digest (the function would refuse it too);
        sqlalchemy.exc.DBAPIError: the database failed (for Database's error mapping).
    """
    if not digests:
        raise InvalidArgument("at least one digest is needed")
    at = epoch_seconds(now)
    details = [canonical_detail(detail) for detail in record.details]
    try:
        return _SPEND.execute(conn, {
            "token_hash": token_hash, "credential_id": credential_id, "certificate_serial": certificate_serial,
            "application_id": application_id,
            "hash_algorithm": algorithm.value, "now": at, "digests": TextArray(d.hex() for d in digests),
            "key_id": key_id, "open_key": open_key, "count_down": count_down, "at": at, "event": record.event,
            "actor": record.actor, "subject": record.subject, "details": TextArray(details),
            "tails": TextArray(record_tail(at, record.event, record.actor, record.subject, d) for d in details)}).one()
    except DBAPIError as exc:
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if sqlstate == CREDENTIAL_CHANGED:
            raise CredentialChanged() from None
        if sqlstate == NOT_TAKEN:
            raise DigestsNotTaken() from None
        if sqlstate == NO_PACKAGE:
            raise CredentialUnusable(PACKAGE_NOT_AVAILABLE) from None
        raise
