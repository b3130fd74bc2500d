"""Database transactions on SQLite: committed or rolled back whole, writers holding the write
lock from their first statement, readers on a snapshot beside them."""

from __future__ import annotations

import os
import sqlite3

import pytest

from signserver.errors import StoreConflict, StoreUnavailable
from signserver.store.database import Database

pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def database(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'test.db'}")
    with database.transaction() as conn:
        conn.exec_driver_sql("CREATE TABLE entries (n INTEGER)")
    yield database
    database.engine.dispose()


def count(database: Database) -> int:
    with database.read() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM entries").scalar()


def outsider(database: Database) -> sqlite3.Connection:
    """Another connection, as another process would hold, that never waits for a lock."""
    connection = sqlite3.connect(database.url.split("///", 1)[1], timeout=0, isolation_level=None)
    connection.execute("PRAGMA busy_timeout=0")
    return connection


def test_a_transaction_commits_on_success_and_rolls_back_whole_on_error(database):
    with database.transaction() as conn:
        conn.exec_driver_sql("INSERT INTO entries VALUES (1)")
    with pytest.raises(RuntimeError):
        with database.transaction() as conn:
            conn.exec_driver_sql("INSERT INTO entries VALUES (2)")
            raise RuntimeError("fails half-way")
    assert count(database) == 1


def test_a_writer_holds_the_write_lock_from_its_first_statement(database):
    other = outsider(database)
    with database.transaction() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM entries").scalar()  # has read, not yet written
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # free once committed
    other.execute("ROLLBACK")
    other.close()


def test_a_reader_sees_one_snapshot_and_does_not_stop_writers(database):
    other = outsider(database)
    with database.read() as conn:
        before = conn.exec_driver_sql("SELECT count(*) FROM entries").scalar()
        other.execute("INSERT INTO entries VALUES (1)")  # autocommit: written beside the reader
        assert conn.exec_driver_sql("SELECT count(*) FROM entries").scalar() == before
    assert count(database) == before + 1
    other.close()


def test_a_write_lock_another_program_keeps_past_the_wait_is_unavailability(tmp_path, monkeypatch):
    monkeypatch.setattr("signserver.store.database.SQLITE_BUSY_TIMEOUT_MS", 200)
    database = Database(f"sqlite:///{tmp_path / 'test.db'}")
    try:
        with database.transaction() as conn:
            conn.exec_driver_sql("CREATE TABLE entries (n INTEGER)")
        other = outsider(database)
        other.execute("BEGIN IMMEDIATE")  # the sqlite3 shell of an operator, say, left in a transaction
        with pytest.raises(StoreUnavailable, match="database is locked"):
            with database.transaction() as conn:
                conn.exec_driver_sql("INSERT INTO entries VALUES (1)")
        other.execute("ROLLBACK")
        with database.transaction() as conn:  # the same process writes again once the lock is free
            conn.exec_driver_sql("INSERT INTO entries VALUES (2)")
        assert count(database) == 1
        other.close()
    finally:
        database.dispose()


def test_writers_after_a_refused_statement_and_in_a_forked_child_commit_on_a_connection_of_their_own(database):
    with database.transaction() as conn:
        conn.exec_driver_sql("CREATE UNIQUE INDEX one_n ON entries (n)")
        conn.exec_driver_sql("INSERT INTO entries VALUES (1)")
    with pytest.raises(StoreConflict):
        with database.transaction() as conn:
            conn.exec_driver_sql("INSERT INTO entries VALUES (2)")
            conn.exec_driver_sql("INSERT INTO entries VALUES (1)")  # refused: the whole transaction goes
    with database.transaction() as conn:
        parents = conn.connection.driver_connection
        conn.exec_driver_sql("INSERT INTO entries VALUES (3)")
    child = os.fork()
    if child == 0:  # SQLite's rule: a connection opened before fork() is never used after it in the child
        try:
            with database.transaction() as conn:
                conn.exec_driver_sql("INSERT INTO entries VALUES (4)")
                own = conn.connection.driver_connection is not parents
        except BaseException:
            os._exit(4)
        os._exit(0 if own else 3)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
    with database.transaction() as conn:
        assert conn.connection.driver_connection is parents
        conn.exec_driver_sql("INSERT INTO entries VALUES (5)")
    with database.read() as conn:
        assert [n for (n,) in conn.exec_driver_sql("SELECT n FROM entries ORDER BY n")] == [1, 3, 4, 5]
