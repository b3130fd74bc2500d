"""LiveLogReader: the records and seals of the live database, read in batches, each batch in a
short read transaction of its own.

A walk of millions of records must not keep one transaction open throughout: on SQLite a reader's
snapshot stops the write-ahead log from being checkpointed past it, so the log grows for as long
as the walk lasts, every page lookup of every writer searches it (signatures slow down with its
size), and the first writer after the walk checkpoints all of it while holding the write lock; on
PostgreSQL an old snapshot holds back vacuum. Records and seals are never changed once written
(only removed from the oldest end by a prune), so batches read at different moments make one
consistent walk up to the head read at its start. A prune during the walk is noticed (the anchor
moves past the walk's position) and reported as :class:`AnchorMoved`, for the caller to start over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from sqlalchemy import bindparam, select

from signserver.audit.anchor import ANCHOR_ROW
from signserver.audit.log import AuditRecord
from signserver.store.database import Database
from signserver.store.schema import audit_anchor, audit_log, audit_seals

BATCH = 5000

_RECORDS = (select(audit_log).where(audit_log.c.seq > bindparam("after"), audit_log.c.seq <= bindparam("until"))
            .order_by(audit_log.c.seq).limit(bindparam("batch")))
_SEALS = (select(audit_seals).where(audit_seals.c.number >= bindparam("first"),
                                    audit_seals.c.number <= bindparam("last"))
          .order_by(audit_seals.c.number).limit(bindparam("batch")))
_ANCHOR_SEQ = select(audit_anchor.c.seq).where(audit_anchor.c.id == ANCHOR_ROW)
_HASH_AT = select(audit_log.c.hash).where(audit_log.c.seq == bindparam("seq"))


class AnchorMoved(Exception):
    """Records ahead of the walk were removed by a prune while it ran."""


@dataclass(frozen=True)
class Progress:
    walked: int  # records read so far
    last_seq: int  # the last of them
    until: int  # the walk's end


class LiveLogReader:
    """``anchor_seq``: where the live chain started when the walk began (0: the genesis);
    ``position()``: the seq the walk has checked up to."""

    def __init__(self, database: Database, anchor_seq: int, position: Callable[[], int], batch: int = BATCH,
                 progress: Callable[[Progress], None] | None = None):
        self._database = database
        self._anchor_seq = anchor_seq
        self._position = position
        self._batch = batch
        self._progress = progress

    def records(self, after: int, until: int) -> Iterator[AuditRecord]:
        """Records after ``after`` up to ``until``, in seq order.

        Raises: AnchorMoved, StoreUnavailable.
        """
        walked = 0
        while after < until:
            with self._database.read() as conn:
                self._check_anchor(conn)
                rows = conn.execute(_RECORDS, {"after": after, "until": until, "batch": self._batch}).all()
            if not rows:
                return
            batch = [AuditRecord(**row._mapping) for row in rows]
            walked += len(batch)
            after = batch[-1].seq
            if self._progress is not None:  # outside any transaction: a slow listener holds nothing
                self._progress(Progress(walked, after, until))
            yield from batch

    def seals(self, first: int, last: int) -> Iterator:
        """Seal rows numbered ``first`` to ``last``, in number order.

        Raises: AnchorMoved, StoreUnavailable.
        """
        while first <= last:
            with self._database.read() as conn:
                self._check_anchor(conn)
                rows = conn.execute(_SEALS, {"first": first, "last": last, "batch": self._batch}).all()
            if not rows:
                return
            yield from rows
            first = rows[-1].number + 1

    def hash_of_record(self, seq: int) -> str | None:
        """The stored hash of record ``seq`` (None: there is none). Raises: StoreUnavailable."""
        with self._database.read() as conn:
            return conn.execute(_HASH_AT, {"seq": seq}).scalar()

    def _check_anchor(self, conn) -> None:
        moved_to = conn.execute(_ANCHOR_SEQ).scalar() or 0
        if moved_to != self._anchor_seq and moved_to > self._position():
            raise AnchorMoved(f"records up to {moved_to} were removed during the walk")
