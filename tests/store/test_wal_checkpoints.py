"""A serving process's thread checkpoints SQLite's write-ahead log: its commits never do, and the
log still starts afresh while writers never pause."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from contextlib import nullcontext
from pathlib import Path

import pytest

from signserver.errors import StoreUnavailable
from signserver.store.database import Database
from signserver.store.wal_checkpoints import FALLBACK_PAGES, WalCheckpoints
from signserver.store.writer_lock import WriterLock

pytestmark = pytest.mark.sqlite_only

_fork = multiprocessing.get_context("fork")
PAGE = 4096


def new_database(tmp_path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'test.db'}")
    with database.transaction() as conn:
        conn.exec_driver_sql("CREATE TABLE entries (body BLOB)")
    return database


def write_pages(database: Database, pages: int, per_commit: int = 100) -> None:
    for _ in range(pages // per_commit):
        with database.transaction() as conn:
            for _ in range(per_commit):
                conn.exec_driver_sql("INSERT INTO entries VALUES (randomblob(4000))")


def file_pages(database: Database, suffix: str = "") -> int:
    try:
        return Path(database.url.split("///", 1)[1] + suffix).stat().st_size // PAGE
    except FileNotFoundError:  # the log, before the first write
        return 0


def test_commits_leave_the_log_to_the_thread_and_a_round_copies_it_all(tmp_path):
    plain = new_database(tmp_path / "plain")
    write_pages(plain, 3_000)
    assert file_pages(plain) > 2_000  # SQLite's own checkpoints ran in those commits

    database = new_database(tmp_path / "served")
    checkpoints = database.checkpoint_in_background(interval=3600)  # no round of its own here
    try:
        write_pages(database, 3_000)
        assert file_pages(database) < 10  # every page is still in the log
        logged, copied = checkpoints.checkpoint()
        assert logged == copied > 3_000
        assert file_pages(database) > 3_000
        assert checkpoints.checkpoint() == (logged, copied)  # nothing written since: nothing to do
        with database.read() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM entries").scalar() == 3_000
    finally:
        checkpoints.stop()
        database.engine.dispose()
        plain.engine.dispose()


def keep_writing(path: str, commits: int) -> None:
    """Another process's writer that never pauses and never checkpoints by itself."""
    lock = WriterLock(Path(f"{path}-writer.lock"))
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES * 100}")
    for _ in range(commits):
        with lock.held():
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO entries VALUES (randomblob(8000))")
            connection.execute("COMMIT")


def test_the_log_starts_afresh_while_another_process_writes_without_pause(tmp_path):
    database = new_database(tmp_path)
    checkpoints = database.checkpoint_in_background(interval=0.02)
    commits = 6_000
    try:
        writer = _fork.Process(target=keep_writing, args=(database.url.split("///", 1)[1], commits))
        writer.start()
        writer.join(120)
        assert writer.exitcode == 0
        written = commits * 3  # each commit appends at least three pages to the log
        largest = file_pages(database, "-wal")  # restarting the log reuses its file: its size is the most it held
        assert largest < written / 5, f"the log grew to {largest} pages for {written} written"
    finally:
        checkpoints.stop()
        database.engine.dispose()


def test_a_database_that_cannot_be_opened_is_reported_as_unavailable(tmp_path):
    checkpoints = WalCheckpoints(tmp_path / "gone" / "test.db", nullcontext)
    with pytest.raises(StoreUnavailable, match="cannot be checkpointed"):
        checkpoints.checkpoint()
