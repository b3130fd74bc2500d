"""One serving process's thread checkpoints SQLite's write-ahead log: no process's commits do, and
the log still starts afresh while writers never pause."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from signserver.errors import StoreUnavailable
from signserver.store.database import Database
from signserver.store.wal_checkpoints import FALLBACK_PAGES, WalCheckpoints
from signserver.store.writer_lock import WriterLock

pytestmark = pytest.mark.sqlite_only

# A process of its own from the start: a child forked from a process with SQLite connections
# open inherits SQLite's state of their files, and its own connections share it.
_spawn = multiprocessing.get_context("spawn")
PAGE = 4096


def new_database(path: Path, query: str = "") -> Database:
    database = Database(f"sqlite:///{path}{query}")
    with database.transaction() as conn:
        conn.exec_driver_sql("CREATE TABLE entries (body BLOB)")
    return database


def write_pages(database: Database, pages: int, per_commit: int = 100) -> None:
    for _ in range(pages // per_commit):
        with database.transaction() as conn:
            for _ in range(per_commit):
                conn.exec_driver_sql("INSERT INTO entries VALUES (randomblob(4000))")


def file_pages(path: Path) -> int:
    try:
        return path.stat().st_size // PAGE
    except FileNotFoundError:  # the log, before the first write
        return 0


def test_commits_leave_the_log_to_the_thread_and_a_round_copies_it_all(tmp_path):
    plain = new_database(tmp_path / "plain.db")
    write_pages(plain, 3_000)
    assert file_pages(tmp_path / "plain.db") > 2_000  # SQLite's own checkpoints ran in those commits

    path = tmp_path / "served.db"
    database = new_database(path, "?timeout=5")  # the file is the URL's path, without its options
    other_process = Database(f"sqlite:///{path}")
    assert other_process.checkpoint_in_background(run_here=False) is None
    checkpoints = database.checkpoint_in_background(run_here=True, interval=3600)  # no round of its own
    try:
        write_pages(database, 1_500)
        write_pages(other_process, 1_500)
        assert file_pages(path) < 10  # every page is still in the log
        logged, copied = checkpoints.checkpoint()
        assert logged == copied > 3_000
        assert file_pages(path) > 3_000
        with database.read() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM entries").scalar() == 3_000
    finally:
        checkpoints.stop()
        for each in (database, other_process, plain):
            each.engine.dispose()


def test_a_round_takes_the_writer_lock_only_when_something_was_written(tmp_path):
    path = tmp_path / "test.db"
    database = new_database(path)
    turns = []

    @contextmanager
    def counted_turn():
        turns.append(1)
        yield

    checkpoints = WalCheckpoints(path, counted_turn)
    try:
        write_pages(database, 200)
        first = checkpoints.checkpoint()
        assert first[0] == first[1] > 0 and len(turns) == 1
        assert checkpoints.checkpoint() == first and len(turns) == 1  # nothing new: no lock
        write_pages(database, 100)
        assert checkpoints.checkpoint()[0] > 0 and len(turns) == 2
    finally:
        checkpoints.stop()
        database.engine.dispose()


def test_a_process_asks_for_the_thread_once(tmp_path):
    database = new_database(tmp_path / "test.db")
    assert database.checkpoint_in_background(run_here=False) is None
    with pytest.raises(RuntimeError, match="once"):
        database.checkpoint_in_background(run_here=True)
    database.engine.dispose()


def keep_writing(path: Path, commits: int) -> None:
    """Another process's writer that never pauses and never checkpoints by itself: between two
    turns at the writer lock it works, as a worker signs (flock is not fair: a process that took
    the lock back the moment it let it go would starve every other)."""
    lock = WriterLock(Path(f"{path}-writer.lock"))
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES * 100}")
    connection.execute("PRAGMA synchronous=OFF")  # a slow disk's syncs would only slow the test
    for _ in range(commits):
        with lock.held():
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO entries VALUES (randomblob(8000))")
            connection.execute("COMMIT")
        busy_until = time.perf_counter() + 0.0003  # about an RSA-2048 signature in SoftHSM
        while time.perf_counter() < busy_until:
            pass


def test_the_log_starts_afresh_while_another_process_writes_without_pause(tmp_path):
    path = tmp_path / "test.db"
    database = new_database(path)
    commits = 6_000
    writer = _spawn.Process(target=keep_writing, args=(path, commits))
    writer.start()
    checkpoints = database.checkpoint_in_background(run_here=True, interval=0.02)
    try:
        writer.join(120)
        assert writer.exitcode == 0
        written = commits * 3  # each commit appends at least three pages to the log
        # Restarting the log reuses its file from the start: its size is the most it ever held.
        # Without the round's pass under the writer lock, it held more than was written.
        largest = file_pages(Path(f"{path}-wal"))
        assert largest < written / 2, f"the log grew to {largest} pages for {written} written"
    finally:
        writer.kill()
        checkpoints.stop()
        database.engine.dispose()


def test_a_database_that_cannot_be_opened_is_reported_as_unavailable(tmp_path):
    checkpoints = WalCheckpoints(tmp_path / "gone.db", contextmanager(lambda: (yield)))
    with pytest.raises(StoreUnavailable, match="cannot be checkpointed"):
        checkpoints.checkpoint()
    assert not (tmp_path / "gone.db").exists()  # not made anew, empty
