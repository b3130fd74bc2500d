"""`audit verify` beside a running service: memory that does not grow with the log, no lock nor
snapshot held while it walks, incremental runs from the last seal found intact, and a prune
during the walk."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading

from sqlalchemy import select, text, update

from benchmarks.audit_verify import fill_log, verify_peak_bytes
from signserver.audit.export import export_segment
from signserver.audit.pruning import AuditPruner
from signserver.audit.verified_mark import VerifiedMark
from signserver.audit.verify import verify_audit_log
from signserver.store.schema import audit_log, audit_seals
from tests.audit.test_seal_tampering import append
from tests.conftest import ON_POSTGRESQL

BATCH = 500


def verify(service, **options):
    return verify_audit_log(service.database, service.sealer.pin, service.clock.now(), service.sealer.max_seal_age,
                            **options)


def test_memory_does_not_grow_with_the_log(fresh_service):
    # A seal every 5 records: both logs have more records and more seals than a batch holds, so
    # the small walk is already at its steady state. Measured: 1.07 and 1.15 MiB on SQLite, 1.06
    # and 1.22 on PostgreSQL (the same ratios as logs four times as long, which took three times
    # as long to fill and walk). A walk that kept every seal (as before) took 8.4 MiB at 10,000
    # records and 13.6 at 110,000, about 1 KiB a seal: here 1.9 MiB more; one that kept every
    # record's hash, 0.24 KiB a record: 2.3 MiB more.
    fill_log(fresh_service, 2_625, seal_every=5)
    verify_peak_bytes(fresh_service, BATCH)  # compiled statements and other caches, made once
    small, intact = verify_peak_bytes(fresh_service, BATCH)
    assert intact
    fill_log(fresh_service, 12_500, seal_every=5)
    large, intact = verify_peak_bytes(fresh_service, BATCH)
    assert intact
    assert large < 1.25 * small, (small, large)


class HeldWalk:
    """A verification in a thread, held between two batches once it has read ``after`` records."""

    def __init__(self, service, after: int = BATCH, **options):
        self.held, self._release = threading.Event(), threading.Event()
        self.report = None

        def progress(done):
            if done.walked >= after and not self.held.is_set():
                self.held.set()
                self._release.wait(timeout=300)  # a safety net should the test fail before releasing

        def run():
            self.report = verify(service, batch=BATCH, progress=progress, **options)

        self._thread = threading.Thread(target=run)

    def __enter__(self):
        self._thread.start()
        assert self.held.wait(timeout=300), "the walk never reached its first batches"
        return self

    def __exit__(self, *exc):
        self._release.set()
        self._thread.join(timeout=300)


def open_transactions(service) -> int:
    """Transactions of this database left open by other connections (PostgreSQL)."""
    with service.database.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()")).scalar()


def test_a_walk_holds_no_lock_nor_snapshot_while_writers_commit(fresh_service):
    fill_log(fresh_service, 3 * BATCH)
    with HeldWalk(fresh_service) as walk:
        # Writers commit while the walk is under way: records, and a seal of them.
        for n in range(3):
            append(fresh_service, n)
        assert fresh_service.sealer.seal() == 3 * BATCH + 3
        if ON_POSTGRESQL:
            assert open_transactions(fresh_service) == 0
        else:
            path = fresh_service.database.url.split("///", 1)[1]
            # No snapshot is held: the whole write-ahead log can be copied back into the database
            # (a reader's snapshot would keep the frames written after it).
            checkpoint = sqlite3.connect(path)
            try:
                busy, frames, copied = checkpoint.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                checkpoint.close()
            assert (busy, copied) == (0, frames), (busy, frames, copied)
            # Nor the writers' queue.
            lock = os.open(f"{path}-writer.lock", os.O_RDWR)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if held
                fcntl.flock(lock, fcntl.LOCK_UN)
            finally:
                os.close(lock)
    assert walk.report.intact, walk.report.problems
    assert walk.report.last_seq == 3 * BATCH  # up to the head as it was when the walk began
    assert verify(fresh_service).intact


def test_incremental_runs_go_on_from_the_last_seal_found_intact(fresh_service, tmp_path):
    mark = VerifiedMark(tmp_path, fresh_service.database.url)
    fill_log(fresh_service, 1000, seal_every=100)
    first = verify(fresh_service, mark=mark)
    assert first.intact and first.walked == 1000 and first.resumed_after_seal is None
    fill_log(fresh_service, 1250, seal_every=100)
    second = verify(fresh_service, mark=mark)
    assert second.intact, second.problems
    assert (second.walked, second.records, second.last_seq) == (250, 1250, 1250)
    assert second.resumed_after_seal is not None and second.seals == first.seals + 3
    # A record after the mark is checked; one before it only by a full walk.
    fill_log(fresh_service, 1300, seal_every=100)
    with fresh_service.database.transaction() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq.in_([10, 1290])).values(actor="someone else"))
    third = verify(fresh_service, mark=mark)
    assert third.problems == ["record 1290 was modified"]
    full = verify(fresh_service, mark=mark, full=True)
    assert set(full.problems) == {"record 10 was modified", "record 1290 was modified"}


def test_a_mark_whose_seal_was_altered_starts_over(fresh_service, tmp_path):
    mark = VerifiedMark(tmp_path, fresh_service.database.url)
    fill_log(fresh_service, 400, seal_every=100)
    assert verify(fresh_service, mark=mark).intact
    with fresh_service.database.transaction() as conn:
        newest = conn.execute(select(audit_seals.c.number).order_by(audit_seals.c.number.desc()).limit(1)).scalar()
        conn.execute(update(audit_seals).where(audit_seals.c.number == newest).values(at=audit_seals.c.at + 1))
    report = verify(fresh_service, mark=mark)
    assert any("which an earlier verification found intact, is gone or altered" in p for p in report.problems)
    assert report.walked == 400 and any("does not verify" in p for p in report.problems)


def test_a_mark_for_other_keys_or_another_database_is_ignored(fresh_service, tmp_path):
    fill_log(fresh_service, 300, seal_every=100)
    assert verify(fresh_service, mark=VerifiedMark(tmp_path, fresh_service.database.url)).intact
    assert verify(fresh_service, mark=VerifiedMark(tmp_path, fresh_service.database.url)).walked == 0
    assert verify(fresh_service, mark=VerifiedMark(tmp_path, "sqlite:////elsewhere.db")).walked == 300


def test_a_prune_during_the_walk_starts_it_over_from_the_new_start(fresh_service, tmp_path):
    fill_log(fresh_service, 3 * BATCH, seal_every=50)
    with HeldWalk(fresh_service) as walk:
        exported = export_segment(fresh_service.database, fresh_service.audit, fresh_service.sealer.pin, 2 * BATCH + 10,
                                  tmp_path / "segment.jsonl", fresh_service.clock.now(),
                                  fresh_service.sealer.max_seal_age, "operator:test")
        pruner = AuditPruner(fresh_service.database, fresh_service.audit, fresh_service.clock, None, 200)
        pruner.prune(exported.last_seq, "operator:test")
        while pruner.remove_batch().records:
            pass
    report = walk.report
    assert report.intact, report.problems
    assert report.first_seq == exported.last_seq + 1 == 2 * BATCH + 1
