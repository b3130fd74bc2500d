"""Verification of the audit chain and its seals: modified, deleted, reordered or cut-off records,
forged, removed or missing seals.

Seals are checked with the pinned seal key only (see :mod:`signserver.audit.seal_key`), never a
key named by the seal's row; when the seal key was replaced, the predecessor's pin verifies only
the seals numbered before the successor's first (the successor's seals chain to them, so they
cannot be replaced afterwards). Removing seals is told four ways: a gap or break in the seal
chain; records left unsealed for longer than a server would leave them; while the log shows a
server running (a sealed ``server.started`` not followed by a sealed ``server.stopped``), a newest
seal older than the heartbeat would leave it; and, along the chain, two consecutive seals further
apart than that, or a seal covering records older than that, unless the log had recorded a clean
stop (seals removed while the server ran, and the rewritten head sealed by its next heartbeat).
"""

from __future__ import annotations

import datetime
import bisect
from dataclasses import dataclass, field

from sqlalchemy import select

from signserver.audit.log import GENESIS_HASH, AuditLog, record_hash
from signserver.audit.seal import SERVER_STARTED, SERVER_STOPPED
from signserver.audit.seal_format import (CHAINED_FORMAT, LEGACY_FORMAT, NO_PREVIOUS_SEAL, SealContent,
                                          signature_is_valid)
from signserver.audit.seal_key import PinnedKey, SealKeyPin, normalise_fingerprint
from signserver.clock import epoch_seconds, from_epoch
from signserver.errors import DataCorrupted
from signserver.store.database import Database
from signserver.store.schema import audit_head, audit_log, audit_seals

BATCH = 5000


@dataclass
class AuditReport:
    records: int = 0
    last_seq: int = 0
    sealed_seq: int = 0
    seals: int = 0
    legacy_seals: int = 0  # made before seals were chained: checked with the pinned key all the same
    seal_key: str | None = None  # SHA-256 fingerprint of the pinned seal key (the successor, if any)
    predecessor_key: str | None = None  # the replaced seal key's fingerprint, when it was replaced
    predecessor_seals: int = 0  # seals numbered before the successor's first, checked with the predecessor
    successor_first_seal: int | None = None  # the first seal of the successor key, when the key was replaced
    newest_seal_at: int | None = None
    server_running: bool = False  # per the sealed log: started and not yet stopped
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems

    @property
    def predecessor_summary(self) -> str | None:
        """Which seals the replaced seal key verified (legacy seals), or None if it was never replaced."""
        if self.successor_first_seal is None:
            return None
        return (f"{self.predecessor_key or 'not pinned'}; verifies only seals numbered below "
                f"{self.successor_first_seal} (legacy: {self.predecessor_seals} seals)")


def verify_audit_log(database: Database, pin: SealKeyPin, now: datetime.datetime,
                     max_seal_age: datetime.timedelta, expected_key: str | None = None) -> AuditReport:
    """Walk the whole chain, check every link, the head, and the seal chain with the pinned key.

    ``max_seal_age``: how long a server leaves a record unsealed, or the newest seal unrenewed,
    at most. ``expected_key``: the SHA-256 fingerprint the pinned seal key must have.

    Raises: StoreUnavailable.
    """
    report = AuditReport()
    pinned = _pinned_keys(pin, expected_key, report)
    allowance = int(max_seal_age.total_seconds())
    with database.read() as conn:  # one snapshot of records, head and seals
        seals = conn.execute(select(audit_seals).order_by(audit_seals.c.number)).all()
        if pinned is None and seals:
            report.problems.append(f"no seal key is pinned at {pin.path}: the {len(seals)} seals cannot be "
                                   "checked (the server pins the token's seal key when it first seals)")
        genuine = _genuine_seals(seals, pinned, report)
        excused = _gap_allowed(conn, genuine)
        _check_seal_gaps(genuine, excused, allowance, report)
        sealed_hashes, last_hash = _walk_records(conn, genuine, excused, allowance, report)
        head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
        if head.seq != report.last_seq or (head.seq and head.hash != last_hash):
            report.problems.append(f"the chain ends at record {report.last_seq} but its head says {head.seq}: "
                                   "records were cut off or added behind its back")
        _match_seals_to_records(genuine, sealed_hashes, report)
        if pinned is not None or not seals:
            _check_freshness(conn, genuine, epoch_seconds(now), max_seal_age, report)
    return report


@dataclass(frozen=True)
class _PinnedKeys:
    predecessor: PinnedKey | None  # verifies the seals numbered before current.first_seal only
    current: PinnedKey

    def for_seal(self, number: int) -> PinnedKey | None:
        return self.current if number >= self.current.first_seal else self.predecessor


def _pinned_keys(pin: SealKeyPin, expected_key: str | None, report: AuditReport) -> _PinnedKeys | None:
    try:
        original, successor = pin.load(), pin.successor().load()
    except DataCorrupted as exc:
        report.problems.append(str(exc))
        original = successor = None
    current = successor or original
    report.seal_key = current.fingerprint if current else None
    if successor is not None:
        report.predecessor_key = original.fingerprint if original else None
        report.successor_first_seal = successor.first_seal
    if expected_key is not None and (current is None or current.fingerprint != normalise_fingerprint(expected_key)):
        report.problems.append(f"the pinned seal key is {report.seal_key or 'missing'}, not the expected key "
                               f"{normalise_fingerprint(expected_key)}")
    if current is None:
        return None
    return _PinnedKeys(predecessor=original if successor is not None else None, current=current)


def _genuine_seals(seals, pinned: _PinnedKeys | None, report: AuditReport) -> list[SealContent]:
    """The seals the pinned keys signed, in chain order; every gap, break or forgery reported."""
    genuine: list[SealContent] = []
    expected_number, previous, chained_seen = 1, NO_PREVIOUS_SEAL, False
    for row in seals:
        report.seals += 1
        report.legacy_seals += int(row.format == LEGACY_FORMAT)
        if row.number != expected_number:
            report.problems.append(f"seals {expected_number} to {row.number - 1} are missing: "
                                   "removed from the seal chain")
        expected_number = row.number + 1
        if row.format not in (LEGACY_FORMAT, CHAINED_FORMAT):
            report.problems.append(f"seal {row.number} has an unknown format ({row.format})")
            continue
        content = SealContent.of_row(row)
        if pinned is None:
            continue
        key = pinned.for_seal(row.number)
        if key is not pinned.current:
            report.predecessor_seals += 1
        if key is None:
            report.problems.append(f"seal {row.number} was made before the seal key was replaced, and no key is "
                                   "pinned for it: it cannot be checked")
            previous = content.digest()
            continue
        if not signature_is_valid(key.public_key, row.signature, content):
            which = "pinned seal key" if key is pinned.current else "replaced seal key pinned for seals before " \
                f"{pinned.current.first_seal}"
            report.problems.append(f"the seal {row.number} at record {row.seq} does not verify with the {which}: "
                                   "forged or altered")
            previous = content.digest()
            continue
        if row.format == CHAINED_FORMAT:
            if row.prev_seal != previous:
                report.problems.append(f"seal {row.number} does not follow the seal before it: seals were "
                                       "removed, reordered or replaced")
            chained_seen = True
        elif chained_seen:
            report.problems.append(f"seal {row.number} has the format of seals made before the chain, after "
                                   "chained seals: it was moved")
        genuine.append(content)
        previous = content.digest()
    if genuine:
        report.newest_seal_at = max(c.at for c in genuine)
    return genuine


def _gap_allowed(conn, genuine: list[SealContent]) -> list[bool]:
    """For each seal, whether the next may come late and cover old records: the newest lifecycle
    record it covers is a clean stop (no server sealed after it), or it is a seal from before the
    chain (those versions sealed every so many records, with no heartbeat)."""
    lifecycle = conn.execute(select(audit_log.c.seq, audit_log.c.event)
                             .where(audit_log.c.event.in_([SERVER_STARTED, SERVER_STOPPED]))
                             .order_by(audit_log.c.seq)).all()
    seqs = [r.seq for r in lifecycle]
    excused = []
    for content in genuine:
        newest = bisect.bisect_right(seqs, content.seq) - 1
        excused.append(content.format == LEGACY_FORMAT
                       or (newest >= 0 and lifecycle[newest].event == SERVER_STOPPED))
    return excused


def _check_seal_gaps(genuine: list[SealContent], excused: list[bool], allowance: int, report: AuditReport) -> None:
    """Consecutive seals go forward in seq and time, at most ``allowance`` apart while a server ran."""
    for i, (before, after) in enumerate(zip(genuine, genuine[1:])):
        if after.seq < before.seq or after.at < before.at:
            report.problems.append(f"seal {after.number} goes back in records or time from seal {before.number}: "
                                   "seals were replaced")
        elif after.at - before.at > allowance and not excused[i]:
            report.problems.append(
                f"seal {after.number} came {after.at - before.at} s after seal {before.number}, more than {allowance} s "
                f"while the log shows no clean stop: seals after {before.number} were removed (and records after "
                f"{before.seq} perhaps rewritten), or the server stopped without recording it")


def _walk_records(conn, genuine: list[SealContent], excused: list[bool], allowance: int,
                  report: AuditReport) -> tuple[dict[int, str], str]:
    """Check every link of the record chain, and that the seal that first covers a record (after
    the first seal, and unless a clean stop came before) was made within ``allowance`` of the
    record's time; return the hashes of the sealed records, and the last record's hash."""
    sealed_seqs = {c.seq for c in genuine}
    # Seals in seq order, with whether the seal before each excuses a late seal.
    covering = sorted((c.seq, c.at, c.number, i > 0 and not excused[i - 1]) for i, c in enumerate(genuine))
    late_reported: set[int] = set()
    position = 0
    hashes: dict[int, str] = {}
    expected_seq, prev_hash, after = 1, GENESIS_HASH, 0
    while batch := AuditLog.records(conn, after=after, limit=BATCH):
        for record in batch:
            while position < len(covering) and covering[position][0] < record.seq:
                position += 1
            if position < len(covering):
                seal_seq, seal_at, number, checked = covering[position]
                if checked and seal_at - record.at > allowance and number not in late_reported:
                    late_reported.add(number)
                    report.problems.append(
                        f"record {record.seq} ({from_epoch(record.at).isoformat()}) was first sealed by seal {number}, "
                        f"more than {allowance} s later while the log shows no clean stop: seals were removed and "
                        "records rewritten")
            if record.seq != expected_seq:
                report.problems.append(f"records {expected_seq} to {record.seq - 1} are missing")
                prev_hash = record.prev_hash  # go on checking from here
            if record.prev_hash != prev_hash:
                report.problems.append(f"record {record.seq} does not follow record {record.seq - 1} "
                                       "(deleted, reordered or altered)")
            computed = record_hash(record.prev_hash, record.seq, record.at, record.event, record.actor,
                                   record.subject, record.detail)
            if computed != record.hash:
                report.problems.append(f"record {record.seq} was modified")
            if record.seq in sealed_seqs:
                hashes[record.seq] = record.hash
            prev_hash, expected_seq = record.hash, record.seq + 1
            report.records += 1
            report.last_seq = record.seq
        after = batch[-1].seq
    return hashes, prev_hash


def _match_seals_to_records(genuine: list[SealContent], hashes: dict[int, str], report: AuditReport) -> None:
    for seq, digest in sorted({(c.seq, c.hash) for c in genuine}):
        if seq not in hashes:
            report.problems.append(f"record {seq}, sealed, is missing: the log was cut off")
        elif hashes[seq] != digest:
            report.problems.append(f"record {seq} differs from what was sealed")
        else:
            report.sealed_seq = max(report.sealed_seq, seq)


def _check_freshness(conn, genuine: list[SealContent], now: int, max_seal_age: datetime.timedelta,
                     report: AuditReport) -> None:
    """Report records left unsealed too long, and a newest seal too old while a server runs."""
    allowance = int(max_seal_age.total_seconds())
    first_unsealed = conn.execute(select(audit_log.c.seq, audit_log.c.at).where(audit_log.c.seq > report.sealed_seq)
                                  .order_by(audit_log.c.seq).limit(1)).first()
    if first_unsealed is not None and now - first_unsealed.at > allowance:
        since = from_epoch(first_unsealed.at).isoformat()
        if not genuine:
            report.problems.append(f"no seal covers the log, whose records go back to {since}: seals were "
                                   "removed, or no server has sealed it (`signserver audit seal` seals it)")
        else:
            report.problems.append(f"records from {first_unsealed.seq} on (the first of {since}) went unsealed "
                                   f"for more than {allowance} s: seals were removed, or no server was sealing "
                                   "(`signserver audit seal` seals them)")
    # Only sealed lifecycle records count: an unsealed "stopped" could have been added by anyone.
    lifecycle = conn.execute(select(audit_log.c.seq, audit_log.c.event)
                             .where(audit_log.c.event.in_([SERVER_STARTED, SERVER_STOPPED]),
                                    audit_log.c.seq <= report.sealed_seq)
                             .order_by(audit_log.c.seq.desc()).limit(1)).first()
    report.server_running = lifecycle is not None and lifecycle.event == SERVER_STARTED
    if report.server_running and report.newest_seal_at is not None and now - report.newest_seal_at > allowance:
        report.problems.append(
            f"the newest seal ({from_epoch(report.newest_seal_at).isoformat()}) is more than {allowance} s old "
            f"while the log shows a server running (started at record {lifecycle.seq}, no stop recorded): later "
            "seals were removed, or the server stopped without recording it")
