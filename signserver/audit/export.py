"""export_segment: write the live log's records up to a seal, and their seals, to a segment file
(:mod:`signserver.audit.segment_file`) that ``signserver audit verify --file`` checks alone.

A segment starts where the live log starts (the genesis, or a prune's anchor) and ends at a seal:
the newest seal of a record at or before the seq asked for. It is checked as it is written (the
same checks as ``audit verify``, and first that the newest ``audit.pruned`` record names where
the live log starts: :mod:`signserver.audit.start_check`): a range that does not verify is not
exported, so that it is never pruned either. The export is recorded in ``audit_exports`` and as
an ``audit.exported`` record of the chain; only exported records can be pruned (:mod:`signserver.audit.pruning`).
"""

from __future__ import annotations

import datetime
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sqlalchemy import insert, select

from signserver.audit.anchor import EXPORTED_EVENT, read_anchor
from signserver.audit.chain_check import RECORD, AuditReport, ChainCheck, ChainStart, PinnedKeys, StartSeal, \
    allowance_seconds, merged, pinned_keys
from signserver.audit.live_log import AnchorMoved, LiveLogReader, Progress
from signserver.audit.log import GENESIS_HASH, AuditLog
from signserver.audit.seal_format import CHAINED_FORMAT
from signserver.audit.seal_key import SealKeyPin
from signserver.audit.segment_file import SealRow, SegmentEnd, SegmentHeader, SegmentStart, SegmentWriter
from signserver.audit.start_check import check_live_start
from signserver.clock import epoch_seconds
from signserver.errors import ConfigurationError, DataCorrupted, InvalidArgument, StoreUnavailable
from signserver.store.database import Database
from signserver.store.schema import audit_exports, audit_seals


@dataclass(frozen=True)
class ExportedSegment:
    path: Path
    first_seq: int
    last_seq: int
    records: int
    seals: int
    seal_number: int
    sha256: str


def export_segment(database: Database, audit: AuditLog, pin: SealKeyPin, until: int, out: Path,
                   now: datetime.datetime, max_seal_age: datetime.timedelta, actor: str,
                   progress: Callable[[Progress], None] | None = None) -> ExportedSegment:
    """Write the records from the start of the live log up to the newest seal at or before
    record ``until``, and their seals, to ``out`` (never overwritten), and record the export.

    Raises:
        InvalidArgument: ``out`` exists or cannot be written; no seal covers a record after the
            start up to ``until``.
        ConfigurationError: no seal key is pinned.
        DataCorrupted: the range does not verify, or the live log's start is not the one its
            newest ``audit.pruned`` record names (nothing is written).
        StoreUnavailable: also when a prune removed the range meanwhile.
        StoreUnavailable, StoreRefused: the export could not be recorded (the file is then removed).
    """
    if out.exists():
        raise InvalidArgument(f"{out} exists: a segment file is never overwritten")
    report = AuditReport()
    pinned = pinned_keys(pin, None, report)
    if pinned is None:
        raise ConfigurationError("state_dir", f"no seal key is pinned at {pin.path}: a segment names the key "
                                              "that checks it (run the server, or `signserver audit seal`, first)")
    with database.read() as conn:
        anchor = read_anchor(conn)
        start_seq = anchor.seq if anchor else 0
        end = conn.execute(select(audit_seals).where(audit_seals.c.seq <= until)
                           .order_by(audit_seals.c.number.desc()).limit(1)).first()
        if end is None or end.seq <= start_seq:
            raise InvalidArgument(f"no seal covers a record from {start_seq + 1} to {until}: seal the log "
                                  "(`signserver audit seal`) or export up to a sealed record")
        start_seal = None
        if anchor is not None:
            row = conn.execute(select(audit_seals).where(audit_seals.c.number == anchor.seal_number)).first()
            if row is None:
                raise DataCorrupted(f"seal {anchor.seal_number}, where the live log starts, is missing: "
                                    "run `signserver audit verify`")
            start_seal = SealRow.of(row)
    # Records removed from the start behind the log's back would otherwise be left out of the
    # segment unnoticed, and a prune after it would hide that they ever were.
    try:
        check_live_start(database, anchor)
    except DataCorrupted as exc:
        raise DataCorrupted(f"records from {start_seq + 1} on are not exported: {exc}") from None
    start = SegmentStart(seq=start_seq, hash=anchor.hash if anchor else GENESIS_HASH, seal=start_seal,
                         lifecycle=anchor.lifecycle if anchor else None, anchor=anchor)
    header = SegmentHeader(first_seq=start_seq + 1, last_seq=end.seq, start=start, seal_keys=pinned.all,
                           exported_at=epoch_seconds(now))
    # A name of its own beside ``out``: another export to the same name may be writing its own.
    # (mkstemp's mode, 0600, stays the file's: a segment holds who signed what.)
    try:
        handle, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    except OSError as exc:
        raise InvalidArgument(f"cannot write {out}: {exc.strerror or exc}") from None
    partial = Path(name)
    try:
        with os.fdopen(handle, "wb") as raw:
            writer = SegmentWriter(raw, compress=out.name.endswith(".gz"))
            writer.header(header)
            check = _write_records(database, writer, header, pinned, end, allowance_seconds(max_seal_age), report,
                                   progress)
            report.close()
            if report.problems:
                more = " (`signserver audit verify --full` lists all)" if len(report.problems) > 3 else ""
                raise DataCorrupted(f"records {header.first_seq} to {header.last_seq} do not verify, so they are not "
                                    "exported: " + "; ".join(report.problems[:3]) + more)
            last_seq, last_hash = check.last
            end_seal = SealRow.of(end)
            sha256 = writer.end(SegmentEnd(records=report.walked, seals=report.seals, last_seq=last_seq,
                                           last_hash=last_hash, seal=end_seal.number, seal_digest=end_seal.digest()))
            raw.flush()
            os.fsync(raw.fileno())
        os.link(partial, out)  # fails if ``out`` appeared meanwhile: never overwritten
    except AnchorMoved:
        raise StoreUnavailable("records of the segment were pruned while it was written; export again") from None
    except FileExistsError:
        raise InvalidArgument(f"{out} exists: a segment file is never overwritten") from None
    except OSError as exc:
        raise InvalidArgument(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    lifecycle = check.lifecycle
    try:
        with database.transaction() as conn:
            conn.execute(insert(audit_exports).values(
                first_seq=header.first_seq, last_seq=last_seq, last_hash=last_hash, seal_number=end_seal.number,
                seal_digest=end_seal.digest(), lifecycle_seq=lifecycle.seq if lifecycle else None,
                lifecycle_event=lifecycle.event if lifecycle else None, file_sha256=sha256, file_name=str(out)[:1000],
                exported_at=epoch_seconds(now)))
            audit.append(conn, now, EXPORTED_EVENT, actor, "audit", first_seq=header.first_seq, last_seq=last_seq,
                         seal=end_seal.number, records=report.walked, file_sha256=sha256)
    except BaseException:
        # An export the log does not record is no export: its file could never be pruned, and
        # would only take the name of the next attempt.
        out.unlink(missing_ok=True)
        raise
    return ExportedSegment(path=out, first_seq=header.first_seq, last_seq=last_seq, records=report.walked,
                           seals=report.seals, seal_number=end_seal.number, sha256=sha256)


def _write_records(database: Database, writer: SegmentWriter, header: SegmentHeader, pinned: PinnedKeys, end,
                   allowance: int, report: AuditReport, progress) -> ChainCheck:
    """Stream the segment's records and seals into the file and through the checks."""
    start = header.start
    chain_start = ChainStart(seq=start.seq, hash=start.hash,
                             seal=StartSeal(start.seal.number, start.seal.digest()) if start.seal else None,
                             lifecycle=start.lifecycle, anchor=start.anchor,
                             chained_seen=start.seal is not None and start.seal.format == CHAINED_FORMAT,
                             count_start_seal=False)
    check: ChainCheck
    reader = LiveLogReader(database, start.seq, lambda: check.last[0], progress=progress)
    check = ChainCheck(pinned, allowance, chain_start, report, reader.hash_of_record)
    if start.seal is not None:
        check.seal(start.seal)
    first_seal = start.seal.number + 1 if start.seal else 1
    for kind, item in merged(reader.records(start.seq, end.seq), reader.seals(first_seal, end.number)):
        if kind is RECORD:
            check.record(item)
            writer.record(item)
        else:
            seal = SealRow.of(item)
            check.seal(seal)
            writer.seal(seal)
    check.check_start_seal_seen()
    if check.last[0] != end.seq:
        report.problem(f"the segment ends at record {check.last[0]}, not at record {end.seq} that seal {end.number} "
                       "sealed: records were cut off")
    return check
