"""The database holds password hashes, sealed OTP seeds and the audit log: its files are the
owner's alone, whatever the umask and wherever the state directory is."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from signserver.store.database import Database

pytestmark = pytest.mark.sqlite_only


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def write_something(database: Database) -> None:
    with database.transaction() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS entries (n INTEGER)")
        conn.exec_driver_sql("INSERT INTO entries VALUES (1)")


def test_the_database_and_its_wal_and_shm_files_are_created_0600_under_a_permissive_umask(tmp_path):
    path = tmp_path / "elsewhere" / "signserver.db"
    previous = os.umask(0o022)
    try:
        database = Database(f"sqlite:///{path}")
        write_something(database)
        with database.read() as conn:  # WAL and shared memory exist while a connection is open
            conn.exec_driver_sql("SELECT count(*) FROM entries").scalar()
            files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
            assert all(f.exists() for f in files)
            assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        database.engine.dispose()
    finally:
        os.umask(previous)


def test_an_existing_database_readable_by_others_is_tightened(tmp_path):
    path = tmp_path / "signserver.db"
    write_something(Database(f"sqlite:///{path}"))
    os.chmod(path, 0o644)
    database = Database(f"sqlite:///{path}")
    write_something(database)
    assert mode(path) == 0o600
    database.engine.dispose()


def test_opening_the_database_again_keeps_the_locks_this_process_holds(tmp_path):
    """Closing any descriptor of a database file drops every POSIX lock the process holds on it,
    SQLite's included: another process then takes itself for the last user, checkpoints and
    removes the write-ahead log under this one's connections. Checking the mode must not open it."""
    path = tmp_path / "signserver.db"
    first = Database(f"sqlite:///{path}")
    write_something(first)
    os.chmod(path, 0o644)
    last_user = ("import sqlite3, sys\n"
                 "c = sqlite3.connect(sys.argv[1])\n"
                 "c.execute('SELECT count(*) FROM entries').fetchall()\n"
                 "c.close()\n")
    with first.read() as conn:  # a connection of this process, in the middle of its work
        conn.exec_driver_sql("SELECT count(*) FROM entries").scalar()
        Database(f"sqlite:///{path}")  # another part of the process opens the same database
        subprocess.run([sys.executable, "-c", last_user, str(path)], check=True)
        assert path.with_name(path.name + "-wal").exists(), "another process removed the log in use"
    assert mode(path) == 0o600
    first.engine.dispose()
