"""ChainCheck: every check of the audit chain and its seals, in one pass and bounded memory.

The records (in seq order) and the seals (in number order) are fed merged: each seal right after
the record it seals (see :func:`merged`). So a seal is checked when the walk reaches its record,
and what the checks need is a handful of values, whatever the length of the log: the previous
record's hash, the previous genuine seal, the newest lifecycle record walked, the oldest record
not yet covered by a seal. The same pass serves the live database (:mod:`signserver.audit.verify`)
and an exported segment file (:mod:`signserver.audit.segment_file`).

Seals are checked with the pinned keys only, never a key named by the seal's row; when the seal
key was replaced, the predecessor verifies only the seals numbered before the successor's first.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from signserver.audit.anchor import LIFECYCLE_EVENTS, PRUNED_EVENT, Anchor, Lifecycle, start_problem
from signserver.audit.log import GENESIS_HASH, AuditRecord, record_hash
from signserver.audit.record_time import is_date, time_text
from signserver.audit.seal import SERVER_STARTED
from signserver.audit.seal_format import CHAINED_FORMAT, LEGACY_FORMAT, NO_PREVIOUS_SEAL, SealContent, \
    signature_is_valid
from signserver.audit.seal_key import PinnedKey, SealKeyPin, normalise_fingerprint
from signserver.errors import DataCorrupted

# A report lists this many problems at most, then counts the rest: a log rewritten throughout
# would otherwise fill memory with one sentence per record.
MAX_PROBLEMS = 1000


@dataclass
class AuditReport:
    records: int = 0  # records of the live chain checked, by this run or (incrementally) an earlier one
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
    problems_left_off: int = 0  # beyond MAX_PROBLEMS
    first_seq: int = 1  # the first record of the live chain (after a prune's anchor)
    walked: int = 0  # records read by this run
    resumed_after_seal: int | None = None  # the seal an incremental run started from

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

    def problem(self, text: str) -> None:
        if self.problems and self.problems[-1] == text:
            return  # heartbeat seals of one record would repeat it
        if len(self.problems) >= MAX_PROBLEMS:
            self.problems_left_off += 1
            return
        self.problems.append(text)

    def close(self) -> None:
        """Say how many problems were left off, as the last problem."""
        if self.problems_left_off:
            self.problems.append(f"... and {self.problems_left_off} more problems")
            self.problems_left_off = 0


@dataclass(frozen=True)
class PinnedKeys:
    predecessor: PinnedKey | None  # verifies the seals numbered before current.first_seal only
    current: PinnedKey
    successor: bool = False  # ``current`` replaced another key (pinned as ``predecessor``, if at all)

    def for_seal(self, number: int) -> PinnedKey | None:
        return self.current if number >= self.current.first_seal else self.predecessor

    @property
    def all(self) -> tuple[PinnedKey, ...]:
        return (self.predecessor, self.current) if self.predecessor else (self.current,)


def pinned_keys(pin: SealKeyPin, expected_key: str | None, report: AuditReport) -> PinnedKeys | None:
    """The keys pinned in the state directory (see :mod:`signserver.audit.seal_key`), their
    fingerprints noted in ``report``; an unreadable pin or another key than ``expected_key`` is a
    problem of the report."""
    try:
        original, successor = pin.load(), pin.successor().load()
    except DataCorrupted as exc:
        report.problem(str(exc))
        original = successor = None
    if successor is not None:
        return note_keys(report, PinnedKeys(original, successor, successor=True), expected_key)
    return note_keys(report, PinnedKeys(None, original) if original else None, expected_key)


def note_keys(report: AuditReport, keys: PinnedKeys | None, expected_key: str | None) -> PinnedKeys | None:
    """Note the keys' fingerprints in ``report``, and a problem unless the current one is ``expected_key``."""
    current = keys.current if keys else None
    report.seal_key = current.fingerprint if current else None
    if keys is not None and keys.successor:
        report.predecessor_key = keys.predecessor.fingerprint if keys.predecessor else None
        report.successor_first_seal = current.first_seal
    if expected_key is not None and (current is None or current.fingerprint != normalise_fingerprint(expected_key)):
        report.problem(f"the pinned seal key is {report.seal_key or 'missing'}, not the expected key "
                       f"{normalise_fingerprint(expected_key)}")
    return keys


@dataclass(frozen=True)
class StartSeal:
    """The seal that sealed the record a walk starts after."""

    number: int
    digest: str | None  # what the seal must be (SealContent.digest()); None: any genuine seal of that record


@dataclass(frozen=True)
class ChainStart:
    """Where a walk starts: the genesis (the defaults), a prune's anchor, or a seal verified before."""

    seq: int = 0
    hash: str = GENESIS_HASH
    seal: StartSeal | None = None
    lifecycle: Lifecycle | None = None  # the newest lifecycle record up to ``seq``
    chained_seen: bool = False  # a chained seal came before (no legacy seal may follow)
    pruned: Anchor | None = None  # the newest audit.pruned record up to ``seq``
    anchor: Anchor | None = None  # the prune this start follows from, to compare with its record
    count_start_seal: bool = True  # the start seal belongs to what is checked (not to an earlier run)

    @classmethod
    def after(cls, anchor: Anchor | None) -> "ChainStart":
        if anchor is None:
            return cls()
        return cls(seq=anchor.seq, hash=anchor.hash, seal=StartSeal(anchor.seal_number, anchor.seal_digest),
                   lifecycle=anchor.lifecycle, anchor=anchor)


@dataclass(frozen=True)
class Checkpoint:
    """What a later walk needs to go on after a genuine seal whose record matched: its state there."""

    seal: SealContent
    excused: bool  # a late next seal is explained (a clean stop, or a legacy seal)
    lifecycle: Lifecycle | None
    chained_seen: bool
    pruned: Anchor | None
    newest_seal_at: int
    legacy_seals: int
    predecessor_seals: int

    def start(self) -> ChainStart:
        return ChainStart(seq=self.seal.seq, hash=self.seal.hash, seal=StartSeal(self.seal.number, self.seal.digest()),
                          lifecycle=self.lifecycle, chained_seen=self.chained_seen, pruned=self.pruned,
                          count_start_seal=False)


@dataclass(frozen=True)
class _Genuine:
    number: int
    seq: int
    at: int
    excused: bool


RECORD, SEAL = "record", "seal"


def merged(records: Iterable[AuditRecord], seals: Iterable) -> Iterator[tuple[str, object]]:
    """Records in seq order and seals in number order as one stream: each seal right after the
    record it seals (before the first record beyond it), so that it is checked against that record."""
    seal_stream = iter(seals)
    seal = next(seal_stream, None)
    for record in records:
        while seal is not None and seal.seq < record.seq:
            yield SEAL, seal
            seal = next(seal_stream, None)
        yield RECORD, record
    while seal is not None:
        yield SEAL, seal
        seal = next(seal_stream, None)


class ChainCheck:
    """Checks records and seals fed in the order of :func:`merged`; problems go to ``report``.

    ``allowance``: how long (s) a server leaves a record unsealed, or the newest seal unrenewed,
    at most. ``hash_of_record(seq)``: the hash of an earlier record, asked only for a seal that
    goes back in the chain (None: such a seal is reported, not matched).
    """

    def __init__(self, pinned: PinnedKeys | None, allowance: int, start: ChainStart, report: AuditReport,
                 hash_of_record: Callable[[int], str | None] | None = None):
        self._pinned = pinned
        self._allowance = allowance
        self._start = start
        self._report = report
        self._hash_of_record = hash_of_record
        self._last_seq, self._last_hash = start.seq, start.hash  # the last record walked
        self._lifecycle = start.lifecycle
        self._pruned = start.pruned
        self._chained_seen = start.chained_seen
        self._awaiting_start_seal = start.seal is not None
        self._expected_number = start.seal.number if start.seal else 1
        self._previous_digest: str | None = NO_PREVIOUS_SEAL if start.seal is None else None
        self._previous_genuine: _Genuine | None = None
        self._uncovered: tuple[int, int] | None = None  # (seq, at) of the oldest record no genuine seal covers
        self._first_unsealed: tuple[int, int] | None = None  # the first record after the newest matched seal
        self._lifecycle_at_sealed: Lifecycle | None = start.lifecycle if start.seal else None
        self.checkpoint: Checkpoint | None = None  # after the newest genuine seal that matched its record
        report.last_seq = start.seq
        if start.seal is not None:
            report.sealed_seq = start.seq

    @property
    def last(self) -> tuple[int, str]:
        """The seq and hash of the last record walked (the start's, before any)."""
        return self._last_seq, self._last_hash

    @property
    def lifecycle(self) -> Lifecycle | None:
        return self._lifecycle

    @property
    def pruned(self) -> Anchor | None:
        """The newest audit.pruned record walked (or known at the start)."""
        return self._pruned

    # --- records ----------------------------------------------------------------------------

    def record(self, record: AuditRecord) -> None:
        report = self._report
        expected = self._last_seq + 1
        prev_hash = self._last_hash
        if record.seq < expected:  # only a file can hold it: the database keeps one record per seq
            report.problem(f"record {record.seq} comes after record {self._last_seq}: repeated or reordered")
            prev_hash = record.prev_hash
        elif record.seq != expected:
            report.problem(f"records {expected} to {record.seq - 1} are missing")
            prev_hash = record.prev_hash  # go on checking from here
        if record.prev_hash != prev_hash:
            report.problem(f"record {record.seq} does not follow record {record.seq - 1} "
                           "(deleted, reordered or altered)")
        computed = record_hash(record.prev_hash, record.seq, record.at, record.event, record.actor,
                               record.subject, record.detail)
        if computed != record.hash:
            report.problem(f"record {record.seq} was modified")
        if not is_date(record.at):
            report.problem(f"record {record.seq} has a time no date can be ({time_text(record.at)}): it was altered")
        if record.event in LIFECYCLE_EVENTS:
            self._lifecycle = Lifecycle(record.seq, record.event)
        elif record.event == PRUNED_EVENT:
            self._pruned_record(record)
        if self._uncovered is None or record.at < self._uncovered[1]:
            self._uncovered = (record.seq, record.at)
        if self._first_unsealed is None and record.seq > report.sealed_seq:
            self._first_unsealed = (record.seq, record.at)
        self._last_seq, self._last_hash = record.seq, record.hash
        report.last_seq = record.seq
        report.records += 1
        report.walked += 1

    def _pruned_record(self, record: AuditRecord) -> None:
        try:
            pruned = Anchor.from_record_detail(record.detail)
        except ValueError:
            self._report.problem(f"record {record.seq} ({PRUNED_EVENT}) does not say what was removed")
            return
        self._pruned = pruned
        anchor = self._start.anchor
        if anchor is not None and pruned.seq == anchor.seq and pruned != anchor:
            self._report.problem(f"record {record.seq} says records up to {pruned.seq} were removed, but not with the "
                                 f"hash, seal or lifecycle that the log now starts from: where it starts was altered")

    # --- seals ------------------------------------------------------------------------------

    def seal(self, row) -> None:
        """One row of ``audit_seals`` (or the same fields), in number order."""
        report = self._report
        starting, self._awaiting_start_seal = self._awaiting_start_seal, False
        if not starting or self._start.count_start_seal:
            report.seals += 1
            report.legacy_seals += int(row.format == LEGACY_FORMAT)
        if row.number != self._expected_number:
            if starting:
                report.problem(f"seal {self._expected_number}, which sealed record {self._start.seq} where the log "
                               "starts, is missing")
            else:
                report.problem(f"seals {self._expected_number} to {row.number - 1} are missing: "
                               "removed from the seal chain")
        self._expected_number = row.number + 1
        if row.format not in (LEGACY_FORMAT, CHAINED_FORMAT):
            report.problem(f"seal {row.number} has an unknown format ({row.format})")
            return
        content = SealContent.of_row(row)
        if self._pinned is None:
            return
        key = self._pinned.for_seal(row.number)
        if key is not self._pinned.current and (not starting or self._start.count_start_seal):
            report.predecessor_seals += 1
        if key is None:
            report.problem(f"seal {row.number} was made before the seal key was replaced, and no key is "
                           "pinned for it: it cannot be checked")
            self._previous_digest = content.digest()
            return
        if not signature_is_valid(key.public_key, row.signature, content):
            which = "pinned seal key" if key is self._pinned.current else \
                f"replaced seal key pinned for seals before {self._pinned.current.first_seal}"
            report.problem(f"the seal {row.number} at record {row.seq} does not verify with the {which}: "
                           "forged or altered")
            self._previous_digest = content.digest()
            return
        if row.format == CHAINED_FORMAT:
            if self._previous_digest is not None and row.prev_seal != self._previous_digest:
                report.problem(f"seal {row.number} does not follow the seal before it: seals were "
                               "removed, reordered or replaced")
            self._chained_seen = True
        elif self._chained_seen:
            report.problem(f"seal {row.number} has the format of seals made before the chain, after "
                           "chained seals: it was moved")
        self._previous_digest = content.digest()
        if starting and row.number == self._start.seal.number:
            self._check_start_seal(content)
        self._genuine(content, starting)

    def _check_start_seal(self, content: SealContent) -> None:
        start = self._start
        if content.seq != start.seq or content.hash != start.hash or \
                (start.seal.digest is not None and content.digest() != start.seal.digest):
            self._report.problem(f"seal {content.number} is not the seal of record {start.seq} where the log "
                                 "starts: the seal or where the log starts was altered")

    def _genuine(self, content: SealContent, starting: bool) -> None:
        report = self._report
        report.newest_seal_at = content.at if report.newest_seal_at is None else max(report.newest_seal_at, content.at)
        lifecycle = self._start.lifecycle if starting else self._lifecycle
        excused = content.format == LEGACY_FORMAT or (lifecycle is not None and lifecycle.stopped)
        before = self._previous_genuine
        if before is not None:
            if content.seq < before.seq or content.at < before.at:
                report.problem(f"seal {content.number} goes back in records or time from seal {before.number}: "
                               "seals were replaced")
            elif content.at - before.at > self._allowance and not before.excused:
                report.problem(
                    f"seal {content.number} came {content.at - before.at} s after seal {before.number}, more than "
                    f"{self._allowance} s while the log shows no clean stop: seals after {before.number} were "
                    f"removed (and records after {before.seq} perhaps rewritten), or the server stopped without "
                    "recording it")
        checked = before is not None and not before.excused
        if self._uncovered is not None and content.seq >= self._uncovered[0]:
            seq, at = self._uncovered
            if checked and content.at - at > self._allowance:
                report.problem(
                    f"record {seq} ({time_text(at)}) was first sealed by seal {content.number}, "
                    f"more than {self._allowance} s later while the log shows no clean stop: seals were removed "
                    "and records rewritten")
            self._uncovered = None
        self._previous_genuine = _Genuine(content.number, content.seq, content.at, excused)
        if self._matches_record(content) and content.seq >= report.sealed_seq:
            report.sealed_seq = content.seq
            self._lifecycle_at_sealed = lifecycle
            self._first_unsealed = None
            self.checkpoint = Checkpoint(seal=content, excused=excused, lifecycle=lifecycle,
                                         chained_seen=self._chained_seen, pruned=self._pruned,
                                         newest_seal_at=report.newest_seal_at, legacy_seals=report.legacy_seals,
                                         predecessor_seals=report.predecessor_seals)

    def _matches_record(self, content: SealContent) -> bool:
        if content.seq == self._last_seq:
            digest = self._last_hash
        elif content.seq > self._last_seq:
            self._report.problem(f"record {content.seq}, sealed, is missing: the log was cut off")
            return False
        else:
            digest = self._hash_of_record(content.seq) if self._hash_of_record else None
            if digest is None:
                return False  # a seal going back: reported as such
        if digest != content.hash:
            self._report.problem(f"record {content.seq} differs from what was sealed")
            return False
        return True

    # --- the end ----------------------------------------------------------------------------

    def check_start_seal_seen(self) -> None:
        """After the last seal: the seal of the record the walk started after must have been there."""
        if self._awaiting_start_seal:
            self._awaiting_start_seal = False
            self._report.problem(f"seal {self._start.seal.number}, which sealed record {self._start.seq} where the "
                                 "log starts, is missing")

    def check_head(self, head_seq: int, head_hash: str, newest_seq: int) -> None:
        """The chain must end at the head (``newest_seq``: the highest seq stored)."""
        if head_seq != self._last_seq or newest_seq > head_seq or (head_seq and head_hash != self._last_hash):
            self._report.problem(f"the chain ends at record {max(self._last_seq, newest_seq)} but its head says "
                                 f"{head_seq}: records were cut off or added behind its back")

    def check_anchor_recorded(self, anchor: Anchor | None) -> None:
        """The newest audit.pruned record must describe where the live chain starts."""
        problem = start_problem(anchor, self._pruned)
        if problem is not None:
            self._report.problem(problem)

    def check_freshness(self, now: int) -> None:
        """Report records left unsealed too long, and a newest seal too old while a server runs."""
        report = self._report
        allowance = self._allowance
        if self._first_unsealed is not None and now - self._first_unsealed[1] > allowance:
            seq, at = self._first_unsealed
            since = time_text(at)
            if self._previous_genuine is None and self._start.seal is None:
                report.problem(f"no seal covers the log, whose records go back to {since}: seals were "
                               "removed, or no server has sealed it (`signserver audit seal` seals it)")
            else:
                report.problem(f"records from {seq} on (the first of {since}) went unsealed "
                               f"for more than {allowance} s: seals were removed, or no server was sealing "
                               "(`signserver audit seal` seals them)")
        # Only sealed lifecycle records count: an unsealed "stopped" could have been added by anyone.
        lifecycle = self._lifecycle_at_sealed
        report.server_running = lifecycle is not None and lifecycle.event == SERVER_STARTED
        if report.server_running and report.newest_seal_at is not None and now - report.newest_seal_at > allowance:
            report.problem(
                f"the newest seal ({time_text(report.newest_seal_at)}) is more than {allowance} s old "
                f"while the log shows a server running (started at record {lifecycle.seq}, no stop recorded): later "
                "seals were removed, or the server stopped without recording it")


def allowance_seconds(max_seal_age: datetime.timedelta) -> int:
    return int(max_seal_age.total_seconds())
