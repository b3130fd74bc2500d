"""Audit segments: export the records up to a seal to a file that is checked alone, prune them
from the database, and the live chain still verifies from its anchor; tampering with the file,
the anchor or the range is reported."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import delete, func, select, update

from benchmarks.audit_verify import fill_log
from signserver.audit.anchor import PRUNED_EVENT
from signserver.audit.chain_check import PinnedKeys
from signserver.audit.export import export_segment
from signserver.audit.log import record_hash
from signserver.audit.pruning import AuditPruner
from signserver.audit.seal_format import SealContent
from signserver.audit.segment_check import verify_segment_files
from signserver.audit.verify import verify_audit_log
from signserver.errors import DataCorrupted, InvalidArgument
from signserver.store.schema import audit_anchor, audit_exports, audit_log, audit_seals
from tests import cli_forkserver
from tests.audit.test_seal_tampering import append
from tests.conftest import SIGNSERVER, cli_env


def export(service, until: int, out: Path):
    return export_segment(service.database, service.audit, service.sealer.pin, until, out, service.clock.now(),
                          service.sealer.max_seal_age, "operator:test")


def pruner(service, keep_days=None, batch=100) -> AuditPruner:
    return AuditPruner(service.database, service.audit, service.clock, keep_days, batch)


def prune(service, until: int, **options):
    p = pruner(service, **options)
    anchor = p.prune(until, "operator:test")
    while p.remove_batch().records:
        pass
    return anchor


def live(service):
    return verify_audit_log(service.database, service.sealer.pin, service.clock.now(), service.sealer.max_seal_age)


def check_files(service, *paths, expected_key=None, pinned=True):
    keys = PinnedKeys(None, service.sealer.pin.load()) if pinned else None
    return verify_segment_files(list(paths), service.sealer.max_seal_age, pinned=keys, expected_key=expected_key).report


def rows(service, table) -> int:
    with service.database.read() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


@pytest.fixture
def log_of_500(fresh_service):
    fill_log(fresh_service, 500, seal_every=50)
    return fresh_service


def test_export_verify_prune_then_the_live_log_still_verifies(log_of_500, tmp_path):
    service = log_of_500
    segment = export(service, 333, tmp_path / "first.jsonl")
    assert (segment.first_seq, segment.last_seq, segment.records) == (1, 300, 300)  # the last seal at or before 333
    alone = check_files(service, segment.path)
    assert alone.intact and (alone.records, alone.sealed_seq) == (300, 300), alone.problems
    anchor = prune(service, segment.last_seq)
    assert (anchor.seq, anchor.export_sha256) == (300, segment.sha256)
    with service.database.read() as conn:
        assert conn.execute(select(func.min(audit_log.c.seq))).scalar() == 301
        assert conn.execute(select(func.min(audit_seals.c.number))).scalar() == anchor.seal_number
    report = live(service)
    assert report.intact, report.problems
    assert (report.first_seq, report.records) == (301, 202)  # and the export and prune records
    # The log goes on: a second segment follows the first, and both check alone and together.
    fill_log(service, 800, seal_every=50)
    second = export(service, 800, tmp_path / "second.jsonl.gz")
    assert second.first_seq == 301
    assert check_files(service, second.path).intact
    assert check_files(service, segment.path, second.path).intact
    backwards = check_files(service, second.path, segment.path)
    assert any("does not start where the file before it ends" in p for p in backwards.problems)
    prune(service, second.last_seq)
    assert live(service).intact


def test_an_export_leaves_another_exports_unfinished_file_alone(log_of_500, tmp_path):
    """Two exports to one name at once each write a file of their own until one of them takes the
    name: neither removes or writes into the other's."""
    service = log_of_500
    folder = tmp_path / "segments"
    folder.mkdir()
    out = folder / "segment.jsonl"
    others = folder / ".segment.jsonl.partial"
    others.write_bytes(b"another export's records so far\n")
    segment = export(service, 333, out)
    assert others.read_bytes() == b"another export's records so far\n"
    assert check_files(service, segment.path).intact
    assert sorted(p.name for p in folder.iterdir()) == [".segment.jsonl.partial", "segment.jsonl"]
    assert out.stat().st_mode & 0o077 == 0  # a segment holds who signed what


def test_only_exported_records_are_pruned(log_of_500, tmp_path):
    service = log_of_500
    with pytest.raises(InvalidArgument, match="were not exported"):
        pruner(service).prune(300, "operator:test")
    segment = export(service, 300, tmp_path / "s.jsonl")
    with pytest.raises(InvalidArgument, match="were not exported"):
        pruner(service).prune(250, "operator:test")  # inside the segment, not its end
    with pytest.raises(InvalidArgument, match="younger than retention.audit_keep_days"):
        pruner(service, keep_days=30).prune(segment.last_seq, "operator:test")
    assert rows(service, audit_anchor) == 0
    service.clock.advance(days=31)
    prune(service, segment.last_seq, keep_days=30)
    with pytest.raises(InvalidArgument, match="removed already"):
        pruner(service).prune(segment.last_seq, "operator:test")


def test_the_policy_prunes_exported_segments_once_old_enough(log_of_500, tmp_path):
    service = log_of_500
    assert pruner(service, keep_days=30).prune_due() is None  # nothing exported
    segment = export(service, 400, tmp_path / "s.jsonl")
    assert pruner(service).prune_due() is None  # no policy: kept for ever
    assert pruner(service, keep_days=30).prune_due() is None  # too young
    service.clock.advance(days=30, seconds=1)
    assert pruner(service, keep_days=30).prune_due().seq == segment.last_seq


def test_a_range_that_does_not_verify_is_not_exported(log_of_500, tmp_path):
    service = log_of_500
    with service.database.transaction() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 120).values(detail="{}"))
    out = tmp_path / "s.jsonl"
    with pytest.raises(DataCorrupted, match="record 120 was modified"):
        export(service, 400, out)
    assert not out.exists() and not list(tmp_path.glob("*jsonl*"))
    with pytest.raises(InvalidArgument, match="exists"):
        out.write_text("")
        export(service, 400, out)


def test_a_segment_ends_at_a_seal(fresh_service, tmp_path):
    fill_log(fresh_service, 40, seal_every=100)  # one seal, at 40
    append(fresh_service, 1)
    assert export(fresh_service, 41, tmp_path / "a.jsonl").last_seq == 40
    prune(fresh_service, 40)
    with pytest.raises(InvalidArgument, match="no seal covers a record from 41 to 43"):
        export(fresh_service, 43, tmp_path / "b.jsonl")


# --- the file, tampered with ------------------------------------------------------------------------

def rewrite(path: Path, change) -> Path:
    """A copy of the segment with its lines passed through ``change(list of dicts)``."""
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    changed = path.with_name("tampered-" + path.name)
    changed.write_text("".join(json.dumps(e) + "\n" for e in change(entries)))
    return changed


@pytest.fixture
def segment(log_of_500, tmp_path):
    return log_of_500, export(log_of_500, 500, tmp_path / "segment.jsonl").path


def records_of(entries):
    return [e["record"] for e in entries if "record" in e]


def test_a_modified_record_in_the_file(segment):
    service, path = segment

    def change(entries):
        records_of(entries)[41]["detail"] = '{"credential":"other"}'
        return entries
    assert "record 42 was modified" in check_files(service, rewrite(path, change)).problems


def test_a_rewritten_chain_in_the_file_is_caught_by_the_seals(segment):
    service, path = segment

    def change(entries):
        prev = None
        for record in records_of(entries):
            if record["seq"] == 42:
                record["actor"] = "someone else"
            if prev is not None:
                record["prev_hash"] = prev
            record["hash"] = record_hash(record["prev_hash"], record["seq"], record["at"], record["event"],
                                         record["actor"], record["subject"], record["detail"])
            prev = record["hash"]
        entries[-1]["end"]["last_hash"] = prev
        return entries
    problems = check_files(service, rewrite(path, change)).problems
    assert "record 50 differs from what was sealed" in problems


def test_records_removed_from_the_file(segment):
    service, path = segment
    without_7 = rewrite(path, lambda entries: [e for e in entries if e.get("record", {}).get("seq") != 7])
    problems = check_files(service, without_7).problems
    assert "records 7 to 7 are missing" in problems
    cut = check_files(service, rewrite(path, lambda e: e[:-30])).problems
    assert any("has no end: the file was cut off" in p for p in cut)


def test_a_file_resealed_with_another_key(segment):
    """Whoever rewrites the file can sign it again with a key of their own: the pin (or the
    expected fingerprint) is what tells."""
    service, path = segment
    forger = ed25519.Ed25519PrivateKey.generate()

    def change(entries):
        pem = forger.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        entries[0]["seal_keys"] = [{"public_key": pem, "sha256": "whatever", "first_seal": 1}]
        for entry in entries:
            if "seal" in entry:
                seal = entry["seal"]
                content = SealContent(number=seal["number"], seq=seal["seq"], hash=seal["hash"], at=seal["at"],
                                      format=seal["format"], prev_seal=seal["prev_seal"])
                seal["signature"] = base64.b64encode(forger.sign(content.message())).decode()
        return entries
    forged = rewrite(path, change)
    assert check_files(service, forged, pinned=False).intact  # alone, its own key checks it...
    assert any("which is not pinned here" in p for p in check_files(service, forged).problems)
    right = check_files(service, path, pinned=False).seal_key
    assert any("not the expected key" in p
               for p in check_files(service, forged, pinned=False, expected_key=right).problems)


def test_a_damaged_file_is_a_problem_not_a_crash(segment, tmp_path):
    service, path = segment
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b"\x00\xff not json\n")
    assert any("header" in p for p in check_files(service, garbage).problems)
    broken_gzip = tmp_path / "broken.jsonl.gz"
    broken_gzip.write_bytes(gzip.compress(path.read_bytes())[:-40])
    assert not check_files(service, broken_gzip).intact
    assert any("no such file" in p for p in check_files(service, tmp_path / "absent.jsonl").problems)


# --- the live anchor, tampered with ---------------------------------------------------------------

@pytest.fixture
def pruned(log_of_500, tmp_path):
    segment = export(log_of_500, 300, tmp_path / "s.jsonl")
    prune(log_of_500, segment.last_seq)
    assert live(log_of_500).intact
    return log_of_500


def test_records_removed_behind_the_anchor_s_back(pruned):
    """Moving the anchor on to hide removed records: the sealed audit.pruned record disagrees."""
    service = pruned
    with service.database.transaction() as conn:
        target = conn.execute(select(audit_seals).where(audit_seals.c.seq == 350)).one()
        conn.execute(update(audit_anchor).values(seq=350, hash=target.hash, seal_number=target.number,
                                                 seal_digest=SealContent.of_row(target).digest()))
        conn.execute(delete(audit_log).where(audit_log.c.seq <= 350))
    problems = live(service).problems
    assert any(f"the newest {PRUNED_EVENT} record says records up to 300" in p for p in problems), problems


def test_an_anchor_removed(pruned):
    service = pruned
    with service.database.transaction() as conn:
        conn.execute(delete(audit_anchor))
    problems = live(service).problems
    assert "records 1 to 300 are missing" in problems


def test_the_anchor_seal_removed(pruned):
    service = pruned
    with service.database.transaction() as conn:
        first = conn.execute(select(func.min(audit_seals.c.number))).scalar()
        conn.execute(delete(audit_seals).where(audit_seals.c.number == first))
    problems = live(service).problems
    assert any("which sealed record 300 where the log starts, is missing" in p for p in problems), problems


# --- the commands ---------------------------------------------------------------------------------

def test_export_verify_file_and_prune_commands(fresh_service, state_dir, tmp_path):
    fill_log(fresh_service, 200, seal_every=50)
    fresh_service.sealer.seal()
    env = cli_env(state_dir, SIGNSERVER_DATABASE_URL=fresh_service.database.url)

    def run(*args):
        return cli_forkserver.run([str(SIGNSERVER), "audit", *args], env=env, capture_output=True, text=True)
    out = tmp_path / "segment.jsonl.gz"
    exported = run("export", "--until", "120", "--out", str(out), "--json")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["last_seq"] == 100
    checked = run("verify", "--file", str(out))
    assert checked.returncode == 0 and "INTACT" in checked.stdout, checked.stdout + checked.stderr
    refused = run("prune", "--until", "150")
    assert refused.returncode == 1 and "were not exported" in refused.stderr
    pruned = run("prune", "--until", "100")
    assert pruned.returncode == 0 and "removed 100 records" in pruned.stdout, pruned.stdout + pruned.stderr
    fresh_service.sealer.seal()  # the prune's own record
    after = run("verify", "--full")
    assert after.returncode == 0 and "records 101 to" in after.stdout, after.stdout


def test_the_migration_makes_the_tables_the_schema_describes(fresh_service):
    from sqlalchemy import inspect

    inspector = inspect(fresh_service.database.engine)
    for table in (audit_anchor, audit_exports):
        made = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
        assert made == {c.name: c.nullable for c in table.columns}, table.name
