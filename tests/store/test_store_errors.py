"""The database's refusals reach callers as signserver's errors (never SQLAlchemy's, never with the
values of the statement), and transactions behave alike on the test store, SQLite or PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text

from signserver.config import DatabaseConfig
from signserver.errors import (
    AlreadyExists,
    InvalidArgument,
    StoreConflict,
    StoreRefused,
    StoreUnavailable,
    StoreValueRefused,
)
from signserver.store.database import Database
from tests.conftest import ON_POSTGRESQL, database_url

metadata = MetaData()
entries = Table("entries", metadata,
                Column("name", String(16), primary_key=True),
                Column("n", Integer, nullable=False))

postgresql_only = pytest.mark.skipif(not ON_POSTGRESQL, reason="PostgreSQL's behaviour (SIGNSERVER_TEST_STORE)")


@pytest.fixture
def database(tmp_path):
    database = Database(database_url(tmp_path / "errors.db"))
    metadata.create_all(database.engine)
    with database.transaction() as conn:
        conn.execute(insert(entries).values(name="taken", n=1))
    yield database
    database.dispose()


def test_a_unique_value_taken_is_a_conflict_that_names_no_value(database):
    with pytest.raises(StoreConflict) as refused, database.transaction() as conn:
        conn.execute(insert(entries).values(name="taken", n=2))
    assert isinstance(refused.value, AlreadyExists)
    assert "taken" not in str(refused.value)
    assert "parameters hidden" in str(refused.value.__cause__)  # nor the statement's values, in a logged traceback
    with database.read() as conn:
        assert conn.execute(select(entries.c.n)).scalars().all() == [1]  # rolled back whole


@postgresql_only
@pytest.mark.parametrize("value", ["x" * 17, "nul\x00inside"], ids=["too long", "NUL"])
def test_a_value_postgresql_cannot_keep_is_refused_as_invalid_input(database, value):
    with pytest.raises(StoreValueRefused) as refused, database.transaction() as conn:
        conn.execute(insert(entries).values(name=value, n=2))
    assert isinstance(refused.value, InvalidArgument)
    assert value not in str(refused.value)


def test_no_free_connection_in_time_is_unavailability(tmp_path):
    database = Database(database_url(tmp_path / "small.db"),
                        DatabaseConfig(pool_size=1, max_overflow=0, pool_timeout_seconds=1))
    try:
        with database.read():  # holds the pool's only connection
            with pytest.raises(StoreUnavailable, match="no database connection came free"):
                with database.read():
                    pass
        with database.read() as conn:  # given back: usable again
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        database.dispose()


@postgresql_only
def test_a_database_that_does_not_answer_is_unavailability(tmp_path):
    database = Database(f"postgresql+psycopg://signserver@/nowhere?host={tmp_path}&connect_timeout=2")
    with pytest.raises(StoreUnavailable, match="does not answer"):
        with database.read():
            pass


@postgresql_only
def test_postgresql_readers_are_read_only_and_see_one_snapshot(database):
    with pytest.raises(StoreRefused, match="read-only"), database.read() as conn:
        conn.execute(insert(entries).values(name="from-a-reader", n=1))
    with database.read() as conn:
        before = conn.execute(select(entries.c.name)).scalars().all()
        with database.transaction() as writer:  # commits beside the reader
            writer.execute(insert(entries).values(name="beside", n=1))
        assert conn.execute(select(entries.c.name)).scalars().all() == before
    with database.read() as conn:
        assert "beside" in conn.execute(select(entries.c.name)).scalars().all()


@postgresql_only
def test_a_change_sent_to_a_read_only_server_is_unavailability_to_try_again(database):
    # What a node meets when its PostgreSQL became a standby (a fail-over) or is put read-only
    # for maintenance: for the time being, not a fault of the statement.
    with database.transaction() as conn:
        name = conn.execute(text("SELECT current_database()")).scalar()
        conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
    database.engine.dispose()  # the setting applies to new sessions
    try:
        with pytest.raises(StoreUnavailable, match="read-only"), database.transaction() as conn:
            conn.execute(insert(entries).values(name="while-read-only", n=1))
    finally:
        with database.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text("SET default_transaction_read_only = off"))
            conn.execute(text(f'ALTER DATABASE "{name}" RESET default_transaction_read_only'))
        database.engine.dispose()
    with database.transaction() as conn:
        conn.execute(insert(entries).values(name="after", n=1))
