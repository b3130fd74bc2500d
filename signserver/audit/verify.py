"""Verification of the live audit chain and its seals: modified, deleted, reordered or cut-off
records, forged, removed or missing seals.

Seals are checked with the pinned seal key only (see :mod:`signserver.audit.seal_key`), never a
key named by the seal's row; when the seal key was replaced, the predecessor's pin verifies only
the seals numbered before the successor's first (the successor's seals chain to them, so they
cannot be replaced afterwards). Removing seals is told four ways: a gap or break in the seal
chain; records left unsealed for longer than a server would leave them; while the log shows a
server running (a sealed ``server.started`` not followed by a sealed ``server.stopped``), a newest
seal older than the heartbeat would leave it; and, along the chain, two consecutive seals further
apart than that, or a seal covering records older than that, unless the log had recorded a clean
stop (seals removed while the server ran, and the rewritten head sealed by its next heartbeat).
A log cut off from its end, or emptied, is told by what the database still holds of it: the head,
the seals, the anchor, the newest recorded export (whose records stay until a prune); a database
where all of that went too, by the seal key pinned beside an empty log.

The walk runs beside the server: in bounded memory (:mod:`signserver.audit.chain_check`), in
batches of short read transactions that never take the writer lock (:mod:`signserver.audit.live_log`),
up to the head read at its start. After a prune it starts at the anchor (:mod:`signserver.audit.anchor`),
and with a :class:`~signserver.audit.verified_mark.VerifiedMark` it starts at the last seal an
earlier intact walk reached.
"""

from __future__ import annotations

import datetime
import logging
from typing import Callable

from sqlalchemy import func, select

from signserver.audit.anchor import Anchor, read_anchor
from signserver.audit.chain_check import (RECORD, AuditReport, ChainCheck, ChainStart, Checkpoint,
                                          allowance_seconds, merged, pinned_keys)
from signserver.audit.live_log import BATCH, AnchorMoved, LiveLogReader, Progress
from signserver.audit.record_time import time_text
from signserver.audit.seal_format import SealContent
from signserver.audit.seal_key import SealKeyPin
from signserver.audit.verified_mark import VerifiedMark
from signserver.clock import epoch_seconds
from signserver.errors import StoreUnavailable
from signserver.store.database import Database
from signserver.store.schema import audit_exports, audit_head, audit_log, audit_seals

__all__ = ["AuditReport", "Progress", "verify_audit_log"]

log = logging.getLogger(__name__)

RESTARTS = 3  # walks started over because a prune removed records ahead of them

_HEAD = select(audit_head.c.seq, audit_head.c.hash)
_NEWEST_SEQ = select(func.max(audit_log.c.seq))
_NEWEST_SEAL = select(func.max(audit_seals.c.number))
_NEWEST_EXPORT = (select(audit_exports.c.last_seq, audit_exports.c.file_sha256, audit_exports.c.exported_at)
                  .order_by(audit_exports.c.last_seq.desc()).limit(1))


def verify_audit_log(database: Database, pin: SealKeyPin, now: datetime.datetime,
                     max_seal_age: datetime.timedelta, expected_key: str | None = None, *,
                     mark: VerifiedMark | None = None, full: bool = False,
                     progress: Callable[[Progress], None] | None = None, batch: int = BATCH) -> AuditReport:
    """Walk the live chain (from its start, or with ``mark`` and not ``full``, from the last seal
    an intact walk reached), check every link, the head, and the seal chain with the pinned key.

    ``max_seal_age``: how long a server leaves a record unsealed, or the newest seal unrenewed,
    at most. ``expected_key``: the SHA-256 fingerprint the pinned seal key must have. ``mark``:
    its seal must still be in the log as it was (with ``full`` too: a log rolled back or emptied
    past it is reported); the walk starts from it unless ``full``, and moves it on when the
    chain is intact. ``progress``: called after each batch of records read.

    Raises: StoreUnavailable (also when prunes kept removing records ahead of the walk).
    """
    for _ in range(RESTARTS):
        try:
            return _verify(database, pin, now, max_seal_age, expected_key, mark, full, progress, batch)
        except AnchorMoved as moved:
            log.info("starting the verification over: %s", moved)
    raise StoreUnavailable("records were removed ahead of the verification again and again: run it again "
                           "once `signserver audit prune` is done")


def _verify(database: Database, pin: SealKeyPin, now: datetime.datetime, max_seal_age: datetime.timedelta,
            expected_key: str | None, mark: VerifiedMark | None, full: bool,
            progress: Callable[[Progress], None] | None, batch: int) -> AuditReport:
    report = AuditReport()
    pinned = pinned_keys(pin, expected_key, report)
    with database.read() as conn:  # where the walk starts and ends: one snapshot
        head = conn.execute(_HEAD).first()
        newest_seq = conn.execute(_NEWEST_SEQ).scalar() or 0
        newest_seal = conn.execute(_NEWEST_SEAL).scalar() or 0
        newest_export = conn.execute(_NEWEST_EXPORT).first()
        anchor = read_anchor(conn)
        # A full walk does not start from the mark, but checks it all the same: a log rolled back
        # (or emptied) past the last seal an earlier run found intact is otherwise a clean log,
        # and the walk would then move the mark back with it.
        checkpoint = mark.load(pinned) if mark is not None else None
        if checkpoint is not None:
            checkpoint = _still_there(conn, checkpoint, anchor, report)
        if full:
            checkpoint = None
        if pinned is None and newest_seal:
            seals = conn.execute(select(func.count()).select_from(audit_seals)).scalar()
            report.problem(f"no seal key is pinned at {pin.path}: the {seals} seals cannot be checked (the server "
                           "pins the token's seal key when it first seals)")
    if head is None:  # every migration makes its one row, and appends only ever update it
        report.problem("the log's head (the row of audit_head) is gone: it was deleted, with what it said of the "
                       "newest record")
    head_seq = head.seq if head is not None else newest_seq
    report.first_seq = anchor.seq + 1 if anchor else 1
    start = ChainStart.after(anchor)
    if checkpoint is not None:
        start = checkpoint.start()
        _carry(report, checkpoint, anchor)
    check: ChainCheck
    reader = LiveLogReader(database, anchor.seq if anchor else 0, lambda: check.last[0], batch, progress)
    check = ChainCheck(pinned, allowance_seconds(max_seal_age), start, report, reader.hash_of_record)
    for kind, item in merged(reader.records(start.seq, head_seq),
                             reader.seals(start.seal.number if start.seal else 1, newest_seal)):
        if kind is RECORD:
            check.record(item)
        else:
            check.seal(item)
    check.check_start_seal_seen()
    if head is not None:
        check.check_head(head.seq, head.hash, newest_seq)
    check.check_anchor_recorded(anchor)
    _check_exports_held(report, check.last[0], newest_export)
    if pinned is not None and not newest_seal and anchor is None and not head_seq and not newest_seq:
        report.problem(f"the log holds no record and no seal, yet a seal key is pinned at {pin.path}, which a "
                       "server writes when it first seals: its records and seals were removed, or this is not "
                       "the database it sealed")
    if pinned is not None or not newest_seal:
        check.check_freshness(epoch_seconds(now))
    report.close()
    if mark is not None and report.intact and check.checkpoint is not None:
        mark.save(check.checkpoint, pinned, epoch_seconds(now))
    return report


def _check_exports_held(report: AuditReport, last_seq: int, newest_export) -> None:
    """Records an export wrote to a file stay in the live log until a prune removes them from its
    start: a log that ends before the newest export's last record was cut off, or emptied."""
    if newest_export is None or newest_export.last_seq <= last_seq:
        return
    ends = f"ends at record {last_seq}" if last_seq else "holds no record"
    report.problem(f"records were exported up to record {newest_export.last_seq} (to a file of SHA-256 "
                   f"{newest_export.file_sha256}, at {time_text(newest_export.exported_at)}), but the "
                   f"log {ends}: records were cut off from its end, or it was emptied")


def _still_there(conn, checkpoint: Checkpoint, anchor: Anchor | None, report: AuditReport) -> Checkpoint | None:
    """The checkpoint, if a walk can go on from it: its seal still in the database as it was.
    Pruned past it: None (the walk starts at the anchor). Gone or altered otherwise: a problem,
    and None (the walk starts over)."""
    if anchor is not None and (anchor.seq > checkpoint.seal.seq or anchor.seal_number > checkpoint.seal.number):
        return None
    row = conn.execute(select(audit_seals).where(audit_seals.c.number == checkpoint.seal.number)).first()
    if row is None or SealContent.of_row(row) != checkpoint.seal:
        report.problem(f"seal {checkpoint.seal.number}, which an earlier verification found intact, is gone or "
                       "altered: the whole log is checked again")
        return None
    return checkpoint


def _carry(report: AuditReport, checkpoint: Checkpoint, anchor: Anchor | None) -> None:
    """Counts of what earlier walks verified, for a walk that goes on from ``checkpoint``."""
    report.records = checkpoint.seal.seq - (anchor.seq if anchor else 0)
    report.seals = checkpoint.seal.number - (anchor.seal_number if anchor else 1) + 1
    report.legacy_seals = checkpoint.legacy_seals
    report.predecessor_seals = checkpoint.predecessor_seals
    report.newest_seal_at = checkpoint.newest_seal_at
    report.resumed_after_seal = checkpoint.seal.number
