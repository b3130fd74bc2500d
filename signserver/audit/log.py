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

from sqlalchemy import Connection, bindparam, insert, select, update

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
    body = json.dumps([prev_hash, seq, at, event, actor, subject, detail], ensure_ascii=False,
                      separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


class AuditLog:
    """Appends security events. Never pass secrets in ``detail``: it is stored as is."""

    def append(self, conn: Connection, now: datetime.datetime, event: str, actor: str, subject: str,
               **detail: Any) -> int:
        """Append one record in the caller's transaction and return its sequence number."""
        return self.append_many(conn, now, event, actor, subject, [detail])

    def append_many(self, conn: Connection, now: datetime.datetime, event: str, actor: str, subject: str,
                    details: list[dict[str, Any]]) -> int:
        """Append one record per ``details`` entry (same event, actor and subject), in order, with
        one lock of the head; returns the last sequence number."""
        head = _LOCK_HEAD.execute(conn).one()
        seq, prev, at, rows = head.seq, head.hash, epoch_seconds(now), []
        for detail in details:
            seq, text = seq + 1, canonical_detail(detail)
            digest = record_hash(prev, seq, at, event, actor, subject, text)
            rows.append({"seq": seq, "at": at, "event": event, "actor": actor, "subject": subject,
                         "detail": text, "prev_hash": prev, "hash": digest})
            prev = digest
        if len(rows) == 1:
            _INSERT_ONE_RECORD.execute(conn, rows[0])
        elif rows:
            conn.execute(_INSERT_RECORD, rows)
        if rows:
            _MOVE_HEAD.execute(conn, {"new_seq": seq, "new_hash": prev})
        return seq

    @staticmethod
    def records(conn: Connection, after: int = 0, limit: int | None = None) -> list[AuditRecord]:
        query = select(audit_log).where(audit_log.c.seq > after).order_by(audit_log.c.seq)
        if limit:
            query = query.limit(limit)
        return [AuditRecord(**row._mapping) for row in conn.execute(query)]
