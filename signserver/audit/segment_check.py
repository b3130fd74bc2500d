"""verify_segment_files: check exported segment files alone, without the database or the HSM.

Each file is read as a stream through the checks of ``audit verify`` (:class:`ChainCheck`), with
the seal keys it names; several files given in order must follow one another (each starts at the
record, hash and seal the one before ends at). The keys in a file are only as trustworthy as the
file: compare them with keys kept apart, the pins of the state directory (``pinned``) or a
fingerprint (``expected_key``), or the report says that it could not.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from signserver.audit.chain_check import RECORD, AuditReport, ChainCheck, ChainStart, PinnedKeys, StartSeal, \
    allowance_seconds, note_keys
from signserver.audit.live_log import Progress
from signserver.audit.seal_format import CHAINED_FORMAT
from signserver.audit.segment_file import SegmentEnd, SegmentHeader, SealRow, lines, open_segment, read_entry, \
    read_header
from signserver.errors import DataCorrupted

PROGRESS_EVERY = 5000  # records between two reports of progress


@dataclass(frozen=True)
class CheckedFile:
    path: Path
    first_seq: int
    last_seq: int
    records: int
    seals: int


@dataclass
class SegmentReport:
    report: AuditReport
    files: list[CheckedFile] = field(default_factory=list)
    keys_from_files_only: bool = False  # no pin nor expected key to compare the files' keys with


@dataclass(frozen=True)
class _Ending:
    """Where a file ended: the next must start there."""

    seq: int
    hash: str
    seal_digest: str


def verify_segment_files(paths: list[Path], max_seal_age: datetime.timedelta, pinned: PinnedKeys | None = None,
                         expected_key: str | None = None, progress: Callable[[Progress], None] | None = None,
                         every: int = PROGRESS_EVERY) -> SegmentReport:
    """Check each file, and that each follows the one before. Unreadable or damaged files are
    problems of the report, never exceptions. ``progress``: called after every ``every`` records
    read (``until``: the last record the file being read names)."""
    result = SegmentReport(AuditReport(), keys_from_files_only=pinned is None and expected_key is None)
    before: _Ending | None = None
    for path in paths:
        before = _check_file(path, result, before, allowance_seconds(max_seal_age), pinned, expected_key,
                             progress, every)
    if result.files:
        result.report.first_seq = result.files[0].first_seq
    result.report.close()
    return result


def _check_file(path: Path, result: SegmentReport, before: _Ending | None, allowance: int,
                pinned: PinnedKeys | None, expected_key: str | None, progress: Callable[[Progress], None] | None,
                every: int) -> _Ending | None:
    report = result.report
    try:
        with open_segment(path) as handle:
            stream = lines(handle)
            first = next(stream, None)
            if first is None:
                raise DataCorrupted("the file is empty")
            header = read_header(first)
            keys = _file_keys(header, report, pinned, expected_key, path)
            if header.first_seq != header.start.seq + 1:
                report.problem(f"{path.name} says it starts at record {header.first_seq}, but it starts after record "
                               f"{header.start.seq}: its header was altered")
            if before is not None and not _follows(header, before):
                report.problem(f"{path.name} does not start where the file before it ends (record {before.seq} "
                               "and its seal): a segment is missing between them, or was altered")
            records_before, seals_before = report.walked, report.seals
            check = ChainCheck(keys, allowance, _chain_start(header), report)
            if header.start.seal is not None:
                check.seal(header.start.seal)
            end, last_seal = None, header.start.seal
            for number, line in enumerate(stream, start=2):
                if end is not None:
                    raise DataCorrupted(f"line {number} follows the end")
                kind, entry = read_entry(line)
                if kind == RECORD:
                    check.record(entry)
                    if progress is not None and report.walked % every == 0:  # the files' records so far
                        progress(Progress(report.walked, entry.seq, header.last_seq))
                elif kind == "seal":
                    check.seal(entry)
                    last_seal = entry
                else:
                    end = entry
            check.check_start_seal_seen()
    except FileNotFoundError:
        report.problem(f"{path}: no such file")
        return None
    except OSError as exc:
        report.problem(f"{path}: cannot be read ({exc.strerror or exc})")
        return None
    except DataCorrupted as exc:
        report.problem(f"{path.name}: {exc}")
        return None
    records, seals = report.walked - records_before, report.seals - seals_before
    _check_end(path, header, end, check, last_seal, records, seals, report)
    result.files.append(CheckedFile(path, header.start.seq + 1, header.last_seq, records, seals))
    last_seq, last_hash = check.last
    return _Ending(last_seq, last_hash, last_seal.digest()) if last_seal is not None else None


def _follows(header: SegmentHeader, before: _Ending) -> bool:
    start = header.start
    return (start.seq, start.hash) == (before.seq, before.hash) and start.seal is not None \
        and start.seal.digest() == before.seal_digest


def _chain_start(header: SegmentHeader) -> ChainStart:
    start = header.start
    return ChainStart(seq=start.seq, hash=start.hash,
                      seal=StartSeal(start.seal.number, None) if start.seal else None,
                      lifecycle=start.lifecycle, anchor=start.anchor,
                      chained_seen=start.seal is not None and start.seal.format == CHAINED_FORMAT,
                      count_start_seal=False)


def _file_keys(header: SegmentHeader, report: AuditReport, pinned: PinnedKeys | None, expected_key: str | None,
               path: Path) -> PinnedKeys:
    """The file's seal keys, checked against the pins (the same key, from the same first seal).

    Raises: DataCorrupted: the file names no key, or more than a key and its successor.
    """
    ordered = sorted(header.seal_keys, key=lambda k: k.first_seal)
    if not 1 <= len(ordered) <= 2:
        raise DataCorrupted("a segment names one seal key, or one and its successor")
    keys = PinnedKeys(ordered[0] if len(ordered) == 2 else None, ordered[-1],
                      successor=len(ordered) == 2 or ordered[-1].first_seal > 1)
    note_keys(report, keys, expected_key)
    if pinned is not None:
        known = {(k.fingerprint, k.first_seal) for k in pinned.all}
        for key in keys.all:
            if (key.fingerprint, key.first_seal) not in known:
                report.problem(f"{path.name} names the seal key {key.fingerprint}, which is not pinned here: the "
                               "file was made by another server, or its keys were replaced with the seals")
    return keys


def _check_end(path: Path, header: SegmentHeader, end: SegmentEnd | None, check: ChainCheck, last_seal: SealRow | None,
               records: int, seals: int, report: AuditReport) -> None:
    last_seq, last_hash = check.last
    if end is None:
        report.problem(f"{path.name} has no end: the file was cut off")
        return
    if (end.records, end.seals, end.last_seq, end.last_hash) != (records, seals, last_seq, last_hash) \
            or end.last_seq != header.last_seq:
        report.problem(f"{path.name} ends at record {last_seq} after {records} records and {seals} seals, but says "
                       f"{end.last_seq} after {end.records} and {end.seals}: records or seals were removed or added")
    if last_seal is None or (end.seal, end.seal_digest) != (last_seal.number, last_seal.digest()):
        report.problem(f"{path.name} does not end with the seal it names (seal {end.seal})")
    if report.sealed_seq < last_seq:
        report.problem(f"records after {report.sealed_seq} in {path.name} are not sealed: a segment ends at a seal")
