"""PreparedStatement gives what SQLAlchemy's own execution gives: the same rows with the same
types, the same row counts, the same errors, in the caller's transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, bindparam, case, insert, null, select, update
from sqlalchemy.exc import IntegrityError, NoResultFound, OperationalError, ProgrammingError

from signserver.store.database import Database
from signserver.store.prepared import PreparedStatement
from tests.conftest import database_url

metadata = MetaData()
items = Table("items", metadata,
              Column("name", String(32), primary_key=True),
              Column("used", Boolean, nullable=False),
              Column("left", Integer, nullable=False),
              Column("note", String(32), nullable=True))

_BY_NAME = select(items).where(items.c.name == bindparam("name"), items.c.used.is_(False)).limit(1)
_TAKE = (update(items).where(items.c.name == bindparam("name"), items.c.used.is_(False))
         .values(used=True, left=items.c.left - bindparam("taken"),
                 note=case((items.c.left <= bindparam("taken"), null()), else_=items.c.note)))
_ADD = insert(items).values(name=bindparam("name"), used=bindparam("used"), left=bindparam("left"),
                            note=bindparam("note"))


@pytest.fixture
def database(tmp_path):
    database = Database(database_url(tmp_path / "test.db"))
    metadata.create_all(database.engine)
    with database.transaction() as conn:
        conn.execute(insert(items), [{"name": "a", "used": False, "left": 1, "note": "first"},
                                     {"name": "b", "used": False, "left": 5, "note": "second"}])
    yield database
    database.engine.dispose()


def test_rows_match_sqlalchemy_with_types_and_bound_literals(database):
    with database.read() as conn:
        expected = conn.execute(_BY_NAME, {"name": "b"}).one()
        got = PreparedStatement(_BY_NAME).execute(conn, {"name": "b"}).one()
    assert tuple(got) == tuple(expected) == ("b", False, 5, "second")
    assert got.used is False and got.name == "b"  # the Boolean comes back a bool, by attribute


def test_update_counts_rows_and_takes_effect_in_the_transaction(database):
    take = PreparedStatement(_TAKE)
    with database.transaction() as conn:
        assert take.execute(conn, {"name": "a", "taken": 1}).rowcount == 1
        assert take.execute(conn, {"name": "a", "taken": 1}).rowcount == 0  # used by the first
        assert take.execute(conn, {"name": "b", "taken": 2}).rowcount == 1
    with database.read() as conn:
        rows = {row.name: row for row in conn.execute(select(items))}
    assert rows["a"].used is True and rows["a"].left == 0 and rows["a"].note is None
    assert rows["b"].used is True and rows["b"].left == 3 and rows["b"].note == "second"


def test_a_failed_transaction_rolls_back_what_it_ran(database):
    add = PreparedStatement(_ADD)
    with pytest.raises(RuntimeError), database.transaction() as conn:
        add.execute(conn, {"name": "c", "used": True, "left": 0, "note": None})
        raise RuntimeError("the caller's work failed")
    with database.read() as conn:
        assert PreparedStatement(_BY_NAME).execute(conn, {"name": "c"}).first() is None
        assert conn.execute(select(items.c.name).where(items.c.name == "c")).first() is None


def test_errors_are_sqlalchemys(database):
    # On SQLAlchemy's own connection: Database.transaction turns them into signserver's.
    add = PreparedStatement(_ADD)
    with pytest.raises(IntegrityError), database.engine.begin() as conn:
        add.execute(conn, {"name": "a", "used": False, "left": 1, "note": None})  # the key exists
    with database.engine.connect() as conn:
        with pytest.raises(NoResultFound):
            PreparedStatement(_BY_NAME).execute(conn, {"name": "nobody"}).one()
        other = Table("missing", MetaData(), Column("n", Integer))
        # Each dialect's class for it, as Connection.execute raises: SQLite's driver calls a
        # missing table an OperationalError, PostgreSQL's an UndefinedTable (a ProgrammingError).
        expected = OperationalError if conn.dialect.name == "sqlite" else ProgrammingError
        with pytest.raises(expected, match="no such table|does not exist"):
            PreparedStatement(select(other)).execute(conn)


def test_the_same_statement_serves_databases_of_several_engines(database, tmp_path):
    second = Database(database_url(tmp_path / "second.db"))
    metadata.create_all(second.engine)
    by_name = PreparedStatement(_BY_NAME)
    try:
        with second.read() as conn:
            assert by_name.execute(conn, {"name": "a"}).first() is None
        with database.read() as conn:
            assert by_name.execute(conn, {"name": "a"}).one().note == "first"
    finally:
        second.engine.dispose()
