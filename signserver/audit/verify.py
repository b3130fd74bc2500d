"""Verification of the audit chain and its seals: modified, deleted, reordered or cut-off records,
forged, removed or missing seals.

Seals are checked with the pinned seal key only (see :mod:`signserver.audit.seal_key`), never a
key named by the seal's row. Removing seals is told three ways: a gap or break in the seal chain;
records left unsealed for longer than a server would leave them; and, while the log shows a
server running (a sealed ``server.started`` not followed by a sealed ``server.stopped``), a newest
seal older than the heartbeat would leave it.
"""

from __future__ import annotations

import datetime
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
    seal_key: str | None = None  # SHA-256 fingerprint of the pinned seal key
    newest_seal_at: int | None = None
    server_running: bool = False  # per the sealed log: started and not yet stopped
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def verify_audit_log(database: Database, pin: SealKeyPin, now: datetime.datetime,
                     max_seal_age: datetime.timedelta, expected_key: str | None = None) -> AuditReport:
    """Walk the whole chain, check every link, the head, and the seal chain with the pinned key.

    ``max_seal_age``: how long a server leaves a record unsealed, or the newest seal unrenewed,
    at most. ``expected_key``: the SHA-256 fingerprint the pinned seal key must have.

    Raises: StoreUnavailable.
    """
    report = AuditReport()
    pinned = _pinned_key(pin, expected_key, report)
    with database.read() as conn:  # one snapshot of records, head and seals
        seals = conn.execute(select(audit_seals).order_by(audit_seals.c.number)).all()
        if pinned is None and seals:
            report.problems.append(f"no seal key is pinned at {pin.path}: the {len(seals)} seals cannot be "
                                   "checked (the server pins the token's seal key when it first seals)")
        genuine = _genuine_seals(seals, pinned, report)
        sealed_hashes, last_hash = _walk_records(conn, {c.seq for c in genuine}, report)
        head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
        if head.seq != report.last_seq or (head.seq and head.hash != last_hash):
            report.problems.append(f"the chain ends at record {report.last_seq} but its head says {head.seq}: "
                                   "records were cut off or added behind its back")
        _match_seals_to_records(genuine, sealed_hashes, report)
        if pinned is not None or not seals:
            _check_freshness(conn, genuine, epoch_seconds(now), max_seal_age, report)
    return report


def _pinned_key(pin: SealKeyPin, expected_key: str | None, report: AuditReport) -> PinnedKey | None:
    try:
        pinned = pin.load()
    except DataCorrupted as exc:
        report.problems.append(str(exc))
        pinned = None
    report.seal_key = pinned.fingerprint if pinned else None
    if expected_key is not None and (pinned is None or pinned.fingerprint != normalise_fingerprint(expected_key)):
        report.problems.append(f"the pinned seal key is {report.seal_key or 'missing'}, not the expected key "
                               f"{normalise_fingerprint(expected_key)}")
    return pinned


def _genuine_seals(seals, pinned: PinnedKey | None, report: AuditReport) -> list[SealContent]:
    """The seals the pinned key signed, in chain order; every gap, break or forgery reported."""
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
        if not signature_is_valid(pinned.public_key, row.signature, content):
            report.problems.append(f"the seal {row.number} at record {row.seq} does not verify with the pinned "
                                   "seal key: forged or altered")
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


def _walk_records(conn, sealed_seqs: set[int], report: AuditReport) -> tuple[dict[int, str], str]:
    """Check every link of the record chain; return the hashes of the sealed records, and the last
    record's hash."""
    hashes: dict[int, str] = {}
    expected_seq, prev_hash, after = 1, GENESIS_HASH, 0
    while batch := AuditLog.records(conn, after=after, limit=BATCH):
        for record in batch:
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
