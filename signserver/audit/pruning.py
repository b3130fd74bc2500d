"""AuditPruner: remove exported records from the live database, keeping it verifiable from there.

A prune moves the start of the live chain (the anchor, :mod:`signserver.audit.anchor`) to after
the last record of an exported segment, in one transaction that also appends an ``audit.pruned``
record saying so; the records and seals before the anchor are then removed a batch at a time
(each batch a short transaction, so that signing is never held up for long), by the command that
pruned or, if it stopped, by the server's background work. Nothing that was not exported is ever
removed: a prune names an export (``audit_exports``) that ends exactly there. With
``[retention] audit_keep_days`` set, records younger than that are kept, and the server prunes
on its own up to the newest export old enough.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, update

from signserver.audit.anchor import ANCHOR_ROW, PRUNED_EVENT, Anchor, Lifecycle, read_anchor
from signserver.audit.log import AuditLog
from signserver.audit.seal_format import SealContent
from signserver.audit.start_check import check_live_start
from signserver.clock import Clock, epoch_seconds
from signserver.errors import DataCorrupted, InvalidArgument, StoreUnavailable
from signserver.store.database import Database
from signserver.store.schema import audit_anchor, audit_exports, audit_head, audit_log, audit_seals

SERVER_ACTOR = "server:retention"
RETRIES = 3  # prunes started over because another prune moved the start meanwhile


@dataclass(frozen=True)
class Removed:
    records: int = 0
    seals: int = 0


class AuditPruner:
    def __init__(self, database: Database, audit: AuditLog, clock: Clock, keep_days: int | None, batch_rows: int):
        self._database = database
        self._audit = audit
        self._clock = clock
        self._keep = datetime.timedelta(days=keep_days) if keep_days is not None else None
        self._batch = batch_rows

    def prune(self, until: int, actor: str) -> Anchor:
        """Start the live log after record ``until``, the last record of an export; the records
        and seals before it go with :meth:`remove_batch`. Asked again for the record where the
        log starts while records or seals before it are still there (a removal that was
        interrupted), it changes nothing and returns that anchor, for :meth:`remove_batch` to finish.

        Raises:
            InvalidArgument: no such record number; already removed; not exported; younger than
                ``audit_keep_days``.
            DataCorrupted: the record or seal the export ended at is no longer as exported; the
                live log's start is not the one its newest ``audit.pruned`` record names.
            StoreUnavailable: also when other prunes kept moving the start meanwhile.
        """
        if until < 1:
            raise InvalidArgument(f"records are numbered from 1: there is no record {until}")
        for _ in range(RETRIES):
            # Checked before the head's lock is taken: the check reads back through the log,
            # and every signature waits on that lock. The start must then be the one checked.
            with self._database.read() as conn:
                checked = read_anchor(conn)
            try:
                check_live_start(self._database, checked)
            except DataCorrupted as exc:
                raise DataCorrupted(f"nothing is removed: {exc}") from None
            anchor = self._prune(until, actor, checked)
            if anchor is not None:
                return anchor
        raise StoreUnavailable("other prunes kept moving the start of the live log: run the command again")

    def _prune(self, until: int, actor: str, checked: Anchor | None) -> Anchor | None:
        """:meth:`prune`, if the live log still starts at ``checked``; None otherwise."""
        now = self._clock.now()
        with self._database.transaction() as conn:
            # The head's lock orders prunes with each other and with every record appended.
            conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1).with_for_update()).one()
            anchor = read_anchor(conn)
            if anchor != checked:
                return None
            start = anchor.seq if anchor else 0
            if until == start and _left_before(conn, anchor):
                return anchor  # the removal was interrupted: the caller's batches finish it
            if until <= start:
                raise InvalidArgument(f"records up to {start} were removed already")
            export = conn.execute(select(audit_exports).where(audit_exports.c.last_seq == until,
                                                              audit_exports.c.first_seq <= start + 1)
                                  .order_by(audit_exports.c.id.desc()).limit(1)).first()
            if export is None:
                raise InvalidArgument(f"records {start + 1} to {until} were not exported: only records that a segment "
                                      f"holds are removed (`signserver audit export --until {until}` first, then prune "
                                      "up to the last record it names)")
            record = conn.execute(select(audit_log.c.hash, audit_log.c.at).where(audit_log.c.seq == until)).first()
            if self._keep is not None and record is not None and record.at > epoch_seconds(now - self._keep):
                raise InvalidArgument(f"record {until} is younger than retention.audit_keep_days "
                                      f"({self._keep.days}): it is kept")
            seal = conn.execute(select(audit_seals).where(audit_seals.c.number == export.seal_number)).first()
            if record is None or record.hash != export.last_hash or seal is None or seal.seq != until \
                    or SealContent.of_row(seal).digest() != export.seal_digest:
                raise DataCorrupted(f"record {until} or its seal {export.seal_number} is no longer as exported: "
                                    "nothing is removed (`signserver audit verify --full`)")
            new = Anchor(seq=until, hash=export.last_hash, seal_number=export.seal_number,
                         seal_digest=export.seal_digest, lifecycle=Lifecycle.of(export.lifecycle_seq,
                                                                                export.lifecycle_event),
                         export_sha256=export.file_sha256)
            values = dict(seq=new.seq, hash=new.hash, seal_number=new.seal_number, seal_digest=new.seal_digest,
                          lifecycle_seq=new.lifecycle.seq if new.lifecycle else None,
                          lifecycle_event=new.lifecycle.event if new.lifecycle else None,
                          export_sha256=new.export_sha256, pruned_at=epoch_seconds(now))
            if not conn.execute(update(audit_anchor).where(audit_anchor.c.id == ANCHOR_ROW).values(**values)).rowcount:
                conn.execute(insert(audit_anchor).values(id=ANCHOR_ROW, **values))
            self._audit.append(conn, now, PRUNED_EVENT, actor, "audit", **new.record_detail())
        return new

    def prune_due(self) -> Anchor | None:
        """With ``audit_keep_days`` set: prune up to the newest export whose records are all older
        than that; None when there is none (or the setting is unset).

        Raises: StoreUnavailable, DataCorrupted (see :meth:`prune`).
        """
        if self._keep is None:
            return None
        cutoff = epoch_seconds(self._clock.now() - self._keep)
        with self._database.read() as conn:
            anchor = read_anchor(conn)
            start = anchor.seq if anchor else 0
            due = conn.execute(select(func.max(audit_exports.c.last_seq))
                               .select_from(audit_exports.join(audit_log, audit_log.c.seq == audit_exports.c.last_seq))
                               .where(audit_exports.c.last_seq > start, audit_exports.c.first_seq <= start + 1,
                                      audit_log.c.at <= cutoff)).scalar()
        return self.prune(due, SERVER_ACTOR) if due is not None else None

    def remove_batch(self) -> Removed:
        """Remove at most ``batch_rows`` records and as many seals from before the anchor.

        Raises: StoreUnavailable.
        """
        with self._database.transaction() as conn:
            anchor = read_anchor(conn)
            if anchor is None:
                return Removed()
            records = seals = 0
            first = conn.execute(select(func.min(audit_log.c.seq))).scalar()
            if first is not None and first <= anchor.seq:
                records = conn.execute(delete(audit_log).where(
                    audit_log.c.seq >= first, audit_log.c.seq < first + self._batch,
                    audit_log.c.seq <= anchor.seq)).rowcount
            first_seal = conn.execute(select(func.min(audit_seals.c.number))).scalar()
            if first_seal is not None and first_seal < anchor.seal_number:
                seals = conn.execute(delete(audit_seals).where(
                    audit_seals.c.number >= first_seal,
                    audit_seals.c.number < min(first_seal + self._batch, anchor.seal_number))).rowcount
        return Removed(records, seals)


def _left_before(conn, anchor: Anchor) -> bool:
    """Whether records or seals that a prune to ``anchor`` removes are still there."""
    first = conn.execute(select(func.min(audit_log.c.seq))).scalar()
    first_seal = conn.execute(select(func.min(audit_seals.c.number))).scalar()
    return (first is not None and first <= anchor.seq) or (first_seal is not None and first_seal < anchor.seal_number)
