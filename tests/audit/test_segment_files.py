"""Segment files checked alone: what the file says of itself must be what it holds, repeated
records are told as such, and a long file reports its progress."""

from __future__ import annotations

import pytest

from benchmarks.audit_verify import fill_log
from signserver.audit.chain_check import PinnedKeys
from signserver.audit.segment_check import verify_segment_files
from tests.audit.test_segments import export, rewrite


@pytest.fixture
def segment(fresh_service, tmp_path):
    fill_log(fresh_service, 200, seal_every=50)
    return fresh_service, export(fresh_service, 200, tmp_path / "segment.jsonl").path


def check(service, path, **options):
    return verify_segment_files([path], service.sealer.max_seal_age, pinned=PinnedKeys(None, service.sealer.pin.load()),
                                **options)


def test_a_header_that_misstates_where_the_file_starts(segment):
    """A file cut at its head, after a seal (and given that seal as its start), is a valid
    segment from there: but it must not say that it starts at the first record."""
    service, path = segment

    def cut(entries):
        header, body = entries[0], entries[1:]
        start_seal = next(e["seal"] for e in body if "seal" in e and e["seal"]["seq"] == 50)
        record_50 = next(e["record"] for e in body if "record" in e and e["record"]["seq"] == 50)
        header["start"].update(seq=50, hash=record_50["hash"], seal=start_seal)
        kept = [e for e in body if e.get("record", {}).get("seq", 51) > 50 and e.get("seal", {}).get("seq", 51) > 50]
        end = kept[-1]["end"]
        end.update(records=end["records"] - 50, seals=end["seals"] - 1)
        return [header, *kept]
    result = check(service, rewrite(path, cut))
    assert any("starts after record 50" in p for p in result.report.problems), result.report.problems
    assert result.files[0].first_seq == 51


def test_a_repeated_record_is_told_as_such(segment):
    service, path = segment

    def repeat(entries):
        at = next(i for i, e in enumerate(entries) if e.get("record", {}).get("seq") == 7)
        return entries[:at + 1] + [entries[at]] + entries[at + 1:]
    problems = check(service, rewrite(path, repeat)).report.problems
    assert any("record 7 comes after record 7: repeated or reordered" in p for p in problems), problems
    assert not any("records 8 to 6" in p for p in problems), problems


def test_a_long_file_reports_its_progress(segment):
    service, path = segment
    seen = []
    result = check(service, path, progress=seen.append, every=60)
    assert result.report.intact
    assert [(p.walked, p.last_seq, p.until) for p in seen] == [(60, 60, 200), (120, 120, 200), (180, 180, 200)]


def test_a_renamed_file_is_read_by_its_content(segment, tmp_path):
    """A transfer that decompressed the file, or dropped its .gz, changes its name only."""
    import gzip

    service, path = segment
    compressed = tmp_path / "renamed.jsonl"
    compressed.write_bytes(gzip.compress(path.read_bytes()))
    plain = tmp_path / "renamed-plain.jsonl.gz"
    plain.write_bytes(path.read_bytes())
    for renamed in (compressed, plain):
        result = check(service, renamed)
        assert result.report.intact, (renamed.name, result.report.problems)


DEEP = b"[" * 100_000 + b"]" * 100_000  # deeper than Python's JSON reader goes


@pytest.mark.parametrize("where", ["header", "record"])
def test_a_line_nested_too_deep_to_read_is_a_problem_of_the_file(segment, tmp_path, where):
    """A damaged file is what verification exists to catch: reported, never an exception."""
    service, path = segment
    lines = path.read_bytes().split(b"\n")
    lines[0 if where == "header" else 2] = b'{"record": ' + DEEP + b"}"
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_bytes(b"\n".join(lines))
    report = check(service, damaged).report
    assert not report.intact and report.problems
