"""`signserver audit verify` checks a database as it is: an auditor runs it on a production
database, or on a copy or backup that must stay as it was. It never upgrades the schema, never
seals, never takes the background work's lease: not one row of any table changes."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import inspect, text, update

from benchmarks.audit_verify import fill_log
from signserver.store.database import NEWEST_MIGRATION, Database
from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env

EXIT_CONFIG = 78


def contents(url: str) -> dict[str, list]:
    """Every row of every table (the schema's version included), in a stable order."""
    database = Database(url)
    try:
        with database.read() as conn:
            names = inspect(conn).get_table_names()
            return {name: sorted((tuple(row) for row in conn.execute(text(f'SELECT * FROM "{name}"')).all()),
                                 key=repr) for name in names}
    finally:
        database.engine.dispose()


@pytest.fixture
def log_db(fresh_service, state_dir):
    """A sealed log of 200 records; its database's URL, and a runner of `signserver audit`."""
    fill_log(fresh_service, 200, seal_every=50)
    url = fresh_service.database.url
    fresh_service.database.engine.dispose()  # PostgreSQL downgrades a database nobody else holds
    env = cli_env(state_dir, SIGNSERVER_DATABASE_URL=url)

    def run(*args):
        return cli_forkserver.run([str(SIGNSERVER), "audit", *args], env=env, capture_output=True, text=True)
    return url, run


def downgrade(url: str, revision: str) -> None:
    database = Database(url)
    try:
        database.downgrade(revision)
    finally:
        database.engine.dispose()


@pytest.mark.parametrize("revision", ["0019", "0014"])
def test_verify_checks_an_older_schema_as_it_is(log_db, revision):
    """A backup made by an earlier version: checked without upgrading it (the audit tables are
    the same since migration 0014)."""
    url, run = log_db
    downgrade(url, revision)
    before = contents(url)
    result = run("verify", "--full", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["intact"] and json.loads(result.stdout)["records"] == 200
    after = contents(url)
    assert after["alembic_version"] == [(revision,)]
    assert after == before


def test_verify_refuses_a_schema_it_cannot_read_and_leaves_it(log_db):
    url, run = log_db
    downgrade(url, "0013")  # before audit segments: no audit_anchor, no audit_exports
    before = contents(url)
    result = run("verify")
    assert result.returncode == EXIT_CONFIG, result.stdout + result.stderr
    line = result.stderr.strip()
    assert "Traceback" not in result.stderr and len(line.splitlines()) == 1, result.stderr
    assert "0013" in line and NEWEST_MIGRATION in line and "never upgrades" in line, line
    assert contents(url) == before


def test_verify_refuses_a_newer_schema_and_leaves_it(log_db):
    url, run = log_db
    database = Database(url)
    with database.transaction() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    database.engine.dispose()
    before = contents(url)
    result = run("verify")
    assert result.returncode == EXIT_CONFIG and "0999" in result.stderr, result.stdout + result.stderr
    assert contents(url) == before


def test_verify_of_a_current_database_changes_nothing(log_db):
    """No seal, heartbeat, lease or record: the report may be stale, the database stays as it was."""
    url, run = log_db
    before = contents(url)
    for args in (("verify",), ("verify", "--full"), ("verify", "--json")):
        result = run(*args)
        assert result.returncode == 0, result.stdout + result.stderr
    assert contents(url) == before
