"""The database holds password hashes, sealed OTP seeds and the audit log: its files are the
owner's alone, whatever the umask and wherever the state directory is."""

from __future__ import annotations

import os
import stat

from signserver.store.database import Database


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
