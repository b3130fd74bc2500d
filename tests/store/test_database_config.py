"""The [database] section: the URL of a store signserver runs on, and each worker's connection budget."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import event

from signserver.config import DatabaseConfig, load_config
from signserver.errors import ConfigurationError
from signserver.store.database import Database
from tests.conftest import ON_POSTGRESQL, database_url


def loaded(tmp_path, **settings: str):
    return load_config(environ={"SIGNSERVER_STATE_DIR": str(tmp_path), **settings})


def test_the_defaults_are_eight_kept_and_eight_more_at_peaks(tmp_path):
    config = loaded(tmp_path)
    assert config.database == DatabaseConfig(pool_size=8, max_overflow=8, pool_timeout_seconds=30)
    assert config.database_url == f"sqlite:///{tmp_path / 'signserver.db'}"


def test_the_budget_is_what_the_engine_pools(tmp_path):
    config = loaded(tmp_path, SIGNSERVER_DATABASE_POOL_SIZE="3", SIGNSERVER_DATABASE_MAX_OVERFLOW="0",
                    SIGNSERVER_DATABASE_POOL_TIMEOUT_SECONDS="5")
    assert config.database == DatabaseConfig(pool_size=3, max_overflow=0, pool_timeout_seconds=5)
    database = Database(config.database_url, config.database)
    try:
        assert (database.engine.pool.size(), database.engine.pool._max_overflow, database.engine.pool._timeout) \
            == (3, 0, 5)
    finally:
        database.dispose()


@pytest.mark.parametrize(("key", "value"), [("POOL_SIZE", "0"), ("MAX_OVERFLOW", "-1"),
                                            ("POOL_TIMEOUT_SECONDS", "0"), ("POOL_SIZE", "eight")])
def test_a_budget_out_of_range_names_its_key(tmp_path, key, value):
    with pytest.raises(ConfigurationError) as refused:
        loaded(tmp_path, **{f"SIGNSERVER_DATABASE_{key}": value})
    assert refused.value.key == f"database.{key.lower()}"


def test_postgresql_is_reached_through_psycopg(tmp_path):
    url = "postgresql+psycopg://signserver@db.example.mo:5432/signserver"
    assert loaded(tmp_path, SIGNSERVER_DATABASE_URL=url).database_url == url
    with pytest.raises(ConfigurationError, match="postgresql\\+psycopg://"):
        loaded(tmp_path, SIGNSERVER_DATABASE_URL="postgresql://signserver@db.example.mo/signserver")
    with pytest.raises(ConfigurationError, match="sqlite:/// or a postgresql\\+psycopg://"):
        loaded(tmp_path, SIGNSERVER_DATABASE_URL="mysql://signserver@db.example.mo/signserver")


def test_an_unreachable_database_is_refused_after_one_try(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    database = Database(f"postgresql+psycopg://signserver@127.0.0.1:{port}/signserver")
    tries = []
    event.listen(database.engine, "do_connect", lambda *_: tries.append(1))
    try:
        with pytest.raises(ConfigurationError, match="cannot open the database") as refused:
            database.migrate()
        assert refused.value.key == "database.url"
        assert len(tries) == 1  # an unreachable host's connect timeout is waited out once, not twice
    finally:
        database.dispose()


def test_calls_one_at_a_time_are_served_by_the_connection_returned_last(tmp_path):
    """Not round every connection the pool holds: on PostgreSQL each is a backend of its own."""
    database = Database(database_url(tmp_path / "lifo.db"))
    try:
        with database.read() as first, database.read() as second, database.read() as third:
            held = {id(conn.connection.driver_connection) for conn in (first, second, third)}
        assert len(held) == 3 and database.engine.pool.checkedin() == 3
        reads, writes = [], []
        for _ in range(6):
            with database.transaction() as conn:
                writes.append(id(conn.connection.driver_connection))
            with database.read() as conn:
                reads.append(id(conn.connection.driver_connection))
        assert reads[0] in held and set(reads) == {reads[0]}
        if ON_POSTGRESQL:
            assert set(writes) == {reads[0]}
        else:  # SQLite's writers take turns on one connection of the process's own
            assert set(writes) == {writes[0]} and writes[0] != reads[0]
    finally:
        database.dispose()
