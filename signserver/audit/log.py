"""AuditLog: append records to the hash chain inside the caller's transaction.

Each record carries the SHA-256 of the previous one. Appenders lock the one-row ``audit_head``
table, so records from every thread and process form one chain, in commit order; a record is
committed with the event it describes, or not at all.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Connection, bindparam, insert, select, text, update

from signserver.clock import epoch_seconds
from signserver.store.prepared import PreparedStatement
from signserver.store.schema import audit_head, audit_log

GENESIS_HASH = "0" * 64

# Built once: every signature appends a record.
_LOCK_HEAD = PreparedStatement(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
                               .with_for_update())
_RECORD_FIELDS = ("seq", "at", "event", "actor", "subject", "detail", "prev_hash", "hash")
_INSERT_RECORD = insert(audit_log)
_INSERT_ONE_RECORD = PreparedStatement(_INSERT_RECORD.values({name: bindparam(name) for name in _RECORD_FIELDS}))
_MOVE_HEAD = PreparedStatement(update(audit_head).where(audit_head.c.id == 1)
                               .values(seq=bindparam("new_seq"), hash=bindparam("new_hash")))
# PostgreSQL: one record is appended by one statement, which locks the head, makes the record's
# hash from it (as record_hash does, byte for byte: the JSON array's head, then ``tail``, the rest
# of it made here) and moves the head. The head's row lock, which every signature of every node
# waits for, is then held for that statement and the commit only, instead of across two more round
# trips and the client's turn to run (tests/audit/test_concurrent_appends.py checks the chain).
_APPEND_ONE_ON_POSTGRESQL = PreparedStatement(text("""
    WITH head AS (SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE),
    moved AS (
        UPDATE audit_head
        SET seq = head.seq + 1,
            hash = encode(sha256(convert_to('["' || head.hash || '",' || (head.seq + 1) || ',' || :tail, 'UTF8')),
                          'hex')
        FROM head WHERE audit_head.id = 1
        RETURNING audit_head.seq, audit_head.hash, head.hash AS prev_hash)
    INSERT INTO audit_log (seq, at, event, actor, subject, detail, prev_hash, hash)
    SELECT seq, :at, :event, :actor, :subject, :detail, prev_hash, hash FROM moved
    RETURNING seq""").columns(seq=BigInteger))
# PostgreSQL: the records of a batch (hashed here, after the head was locked) written, and the head
# moved, in one statement, whatever their number: an ``executemany`` would run a statement per
# record, each parsed, planned and executed by the server on the cores the workers sign on.
_APPEND_LOCKED_ON_POSTGRESQL = PreparedStatement(text("""
    WITH moved AS (UPDATE audit_head SET seq = :new_seq, hash = :new_hash WHERE id = 1)
    INSERT INTO audit_log (seq, at, event, actor, subject, detail, prev_hash, hash)
    SELECT record.seq, :at, :event, :actor, :subject, record.detail, record.prev_hash, record.hash
    FROM unnest(CAST(:seqs AS BIGINT[]), CAST(:details AS TEXT[]), CAST(:prev_hashes AS TEXT[]),
                CAST(:hashes AS TEXT[])) AS record (seq, detail, prev_hash, hash)"""))


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    at: int
    event: str
    actor: str
    subject: str
    detail: str  # canonical JSON
    prev_hash: str
    hash: str


def canonical_detail(detail: dict[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(prev_hash: str, seq: int, at: int, event: str, actor: str, subject: str, detail: str) -> str:
    """SHA-256 over the previous hash and every field of the record (so any change shows)."""
    return hashlib.sha256(_json_array([prev_hash, seq, at, event, actor, subject, detail]).encode("utf-8")).hexdigest()


def record_tail(at: int, event: str, actor: str, subject: str, detail: str) -> str:
    """What follows ``[prev_hash,seq,`` in the JSON array that :func:`record_hash` hashes, so that
    the database can hash a record once it has locked the head (PostgreSQL's ``sha256()``), byte
    for byte as :func:`record_hash` would."""
    return _json_array([at, event, actor, subject, detail])[1:]


def _json_array(values: list[Any]) -> str:
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"))


class AuditLog:
    """Appends security events. Never pass secrets in ``detail``: it is stored as is."""

    def append(self, conn: Connection, now: datetime.datetime, event: str, actor: str, subject: str,
               **detail: Any) -> int:
        """Append one record in the caller's transaction and return its sequence number.

        Raises: nothing of its own; the database's errors end the caller's transaction, which
        turns them into StoreUnavailable, StoreConflict, StoreValueRefused or StoreRefused.
        """
        return self.append_many(conn, now, event, actor, subject, [detail])

    def append_many(self, conn: Connection, now: datetime.datetime, event: str, actor: str, subject: str,
                    details: list[dict[str, Any]]) -> int:
        """Append one record per ``details`` entry (same event, actor and subject), in order, with
        one lock of the head; returns the last sequence number.

        Raises: as :meth:`append`.
        """
        if len(details) == 1 and conn.dialect.name == "postgresql":
            return self._append_one_on_postgresql(conn, epoch_seconds(now), event, actor, subject, details[0])
        head = _LOCK_HEAD.execute(conn).one()
        seq, prev, at, rows = head.seq, head.hash, epoch_seconds(now), []
        for detail in details:
            seq, detail_text = seq + 1, canonical_detail(detail)
            digest = record_hash(prev, seq, at, event, actor, subject, detail_text)
            rows.append({"seq": seq, "at": at, "event": event, "actor": actor, "subject": subject,
                         "detail": detail_text, "prev_hash": prev, "hash": digest})
            prev = digest
        if not rows:
            return seq
        if conn.dialect.name == "postgresql":
            _APPEND_LOCKED_ON_POSTGRESQL.execute(conn, {
                "new_seq": seq, "new_hash": prev, "at": at, "event": event, "actor": actor, "subject": subject,
                **{column: [row[name] for row in rows] for column, name in
                   (("seqs", "seq"), ("details", "detail"), ("prev_hashes", "prev_hash"), ("hashes", "hash"))}})
            return seq
        if len(rows) == 1:
            _INSERT_ONE_RECORD.execute(conn, rows[0])
        else:
            conn.execute(_INSERT_RECORD, rows)
        _MOVE_HEAD.execute(conn, {"new_seq": seq, "new_hash": prev})
        return seq

    @staticmethod
    def _append_one_on_postgresql(conn: Connection, at: int, event: str, actor: str, subject: str,
                                  detail: dict[str, Any]) -> int:
        detail_text = canonical_detail(detail)
        tail = record_tail(at, event, actor, subject, detail_text)
        return _APPEND_ONE_ON_POSTGRESQL.execute(conn, {"tail": tail, "at": at, "event": event, "actor": actor,
                                                        "subject": subject, "detail": detail_text}).one().seq

    @staticmethod
    def records(conn: Connection, after: int = 0, limit: int | None = None) -> list[AuditRecord]:
        """The records after ``after``, in seq order, at most ``limit`` (all of them in memory: a
        long log is walked with :class:`signserver.audit.live_log.LiveLogReader`).

        Raises: as :meth:`append`.
        """
        query = select(audit_log).where(audit_log.c.seq > after).order_by(audit_log.c.seq)
        if limit:
            query = query.limit(limit)
        return [AuditRecord(**row._mapping) for row in conn.execute(query)]
