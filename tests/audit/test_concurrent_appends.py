"""Appenders racing on the audit head, on either store, make one unbroken chain: single records
(made by the database itself on PostgreSQL) and batches (made here) interleaved."""

from __future__ import annotations

import datetime
import threading

from signserver.audit.log import AuditLog, record_hash
from signserver.store.database import Database
from tests.conftest import database_url

THREADS = 6
APPENDS = 15
WHEN = datetime.datetime(2026, 11, 21, 2, 26, 6, tzinfo=datetime.timezone.utc)


def test_racing_appenders_make_one_chain(tmp_path):
    database = Database(database_url(tmp_path / "audit.db"))
    log = AuditLog()
    start = threading.Barrier(THREADS)
    failures = []

    def append(worker: int) -> None:
        try:
            start.wait()
            for n in range(APPENDS):
                with database.transaction() as conn:
                    if n % 5 == 4:  # now and then a batch, as a SignHash of several digests appends
                        log.append_many(conn, WHEN, "signature", f"application:{worker}", "holder",
                                        [{"digest": f"{worker}-{n}-{i}"} for i in range(3)])
                    else:  # non-ASCII and JSON's escapes in every field the database hashes
                        log.append(conn, WHEN, "login.failed", f"應用程式 {worker}", 'quote " and \\ slash',
                                   reason=f"第 {n} 次\n\t", worker=worker)
        except Exception as exc:  # reported below, with the thread's own traceback
            failures.append(exc)

    threads = [threading.Thread(target=append, args=(w,)) for w in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures

    with database.read() as conn:
        records = AuditLog.records(conn)
    batches = APPENDS // 5
    assert len(records) == THREADS * (APPENDS - batches + 3 * batches)
    previous = "0" * 64
    for expected_seq, record in enumerate(records, start=1):
        assert record.seq == expected_seq
        assert record.prev_hash == previous
        assert record.hash == record_hash(previous, record.seq, record.at, record.event, record.actor,
                                          record.subject, record.detail), record
        previous = record.hash
    database.engine.dispose()
