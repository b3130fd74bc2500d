"""INSERT ... ON CONFLICT, which SQLAlchemy offers per dialect only."""

from __future__ import annotations

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_on_conflict(conn: Connection, table: Table):
    """An INSERT into ``table`` for the connection's database, on which ``on_conflict_do_update``
    and ``on_conflict_do_nothing`` are available (SQLite's and PostgreSQL's take the same arguments)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)
