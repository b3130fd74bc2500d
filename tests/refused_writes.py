"""A database refusing some writes, as a full disk would: a trigger, on SQLite or PostgreSQL, that
the test takes away again."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def writes_refused(database, operation: str, table: str, condition: str = "TRUE"):
    """``database`` (the core's Database or the RA's RaDatabase) refusing, until the block ends, to
    ``operation`` ("INSERT", "UPDATE" or "DELETE") the rows of ``table`` meeting ``condition`` (SQL
    on NEW; on OLD for DELETE)."""
    with database.engine.begin() as conn:
        if database.is_sqlite:
            conn.exec_driver_sql(f"CREATE TRIGGER refuse_writes BEFORE {operation} ON {table} WHEN {condition} "
                                 "BEGIN SELECT RAISE(ABORT, 'the disk is full'); END")
        else:
            conn.exec_driver_sql("CREATE FUNCTION refuse_writes() RETURNS trigger LANGUAGE plpgsql AS "
                                 "$$ BEGIN RAISE EXCEPTION 'the disk is full'; END $$")
            conn.exec_driver_sql(f"CREATE TRIGGER refuse_writes BEFORE {operation} ON {table} FOR EACH ROW "
                                 f"WHEN ({condition}) EXECUTE FUNCTION refuse_writes()")
    try:
        yield
    finally:
        with database.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER refuse_writes" + ("" if database.is_sqlite else f" ON {table}"))
            if not database.is_sqlite:
                conn.exec_driver_sql("DROP FUNCTION refuse_writes()")
