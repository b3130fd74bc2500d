"""`signserver audit verify` checks a database as it is: an auditor runs it on a production
database, or on a copy or backup that must stay as it was. It never upgrades the schema, never
seals, never takes the background work's lease: not one row of any table changes. It opens the
database read-only: a SQLite copy keeps its bytes, its mode and its journal mode, and nothing is
left beside it; a live database is checked while its server writes."""

from __future__ import annotations

import contextlib
import shutil
import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect, make_url, text, update

from benchmarks.audit_verify import fill_log
from signserver.store.database import NEWEST_MIGRATION, Database
from tests import cli_forkserver
from tests.conftest import ON_POSTGRESQL, SIGNSERVER, cli_env
from tests.grpc_api.serve_process import ServeProcess

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


def snapshot(path: Path) -> tuple:
    """A SQLite file's SHA-256, its mode, its header's journal bytes (18-19: 01 01 rollback
    journal, 02 02 WAL) and what lies beside it."""
    data = path.read_bytes()
    return (hashlib.sha256(data).hexdigest(), stat.S_IMODE(path.stat().st_mode), data[18:20].hex(),
            sorted(p.name for p in path.parent.iterdir()))


def backup_of(url: str, folder: Path, journal_mode: str) -> Path:
    """A copy of the SQLite database at ``url`` in ``folder``, in ``journal_mode``, readable by
    others (as a backup may be)."""
    backup = folder / "signserver.db"
    folder.mkdir()
    with contextlib.closing(sqlite3.connect(make_url(url).database)) as live, \
            contextlib.closing(sqlite3.connect(backup)) as copy:
        live.backup(copy)
        copy.execute(f"PRAGMA journal_mode={journal_mode}")
    os.chmod(backup, 0o644)
    return backup


@pytest.mark.sqlite_only
def test_verify_leaves_a_rollback_journal_backup_byte_for_byte_as_it_was(log_db, state_dir, tmp_path):
    """A backup in rollback-journal mode, readable by its group and others: opening it must not
    switch it to WAL (header bytes 18-19), tighten its mode, nor leave -wal, -shm or a lock file."""
    url, _ = log_db
    backup = backup_of(url, tmp_path / "backup", "DELETE")
    before = snapshot(backup)
    assert before[1:] == (0o644, "0101", ["signserver.db"])
    result = cli_forkserver.run([str(SIGNSERVER), "audit", "verify", "--full", "--json"],
                                env=cli_env(state_dir, SIGNSERVER_DATABASE_URL=f"sqlite:///{backup}"),
                                capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["intact"] and json.loads(result.stdout)["records"] == 200
    assert snapshot(backup) == before


def test_verify_checks_a_live_database_while_its_server_writes(state_dir, tmp_path):
    """The server seals every second or two (a heartbeat when nothing else happens) and renews its
    lease every second: each verification reads beside those writes, and finds the log intact and,
    once the server's start is sealed, the server running."""
    server = ServeProcess(state_dir, tmp_path, workers=1, SIGNSERVER_AUDIT_SEAL_INTERVAL_SECONDS="1").start()
    try:
        # The start is recorded and sealed by the background work, which begins once the server
        # serves: a busy machine may run a verification before it.
        deadline = time.monotonic() + 60
        while True:
            result = server.cli("audit", "verify", "--full", "--json")
            assert result.returncode == 0, result.stdout + result.stderr
            report = json.loads(result.stdout)
            assert report["intact"], report
            if report["server_running"]:
                break
            assert time.monotonic() < deadline, report
            time.sleep(0.2)
        seals = []
        deadline = time.monotonic() + 120
        while len(seals) < 3 or seals[-1] < seals[0] + 2:  # until the server sealed twice meanwhile
            assert time.monotonic() < deadline, seals
            result = server.cli("audit", "verify", "--full", "--json")
            assert result.returncode == 0, result.stdout + result.stderr
            report = json.loads(result.stdout)
            assert report["intact"] and report["server_running"], report
            seals.append(report["seals"])
        if not ON_POSTGRESQL:
            assert (tmp_path / "signserver.db").read_bytes()[18:20].hex() == "0202"  # WAL, as the server has it
    finally:
        assert server.stop() == 0, server.text()[-3000:]


@pytest.mark.sqlite_only
@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"),
                    reason="setpriv (util-linux) takes from root the capabilities that ignore file modes")
@pytest.mark.parametrize("journal_mode", ["DELETE", "WAL"])
def test_verify_in_a_directory_it_cannot_write(log_db, state_dir, tmp_path, journal_mode):
    """A backup on read-only media: a file in rollback-journal mode is checked; one in WAL mode
    cannot be read without its -shm file, which cannot be made there: refused in one line that
    says so and what to do (exit 78)."""
    url, _ = log_db
    backup = backup_of(url, tmp_path / "backup", journal_mode)
    os.chmod(backup.parent, 0o555)
    before = snapshot(backup)
    # As root, without the capabilities that let root write where the modes say no.
    as_user = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    command = [*as_user, str(SIGNSERVER), "audit", "verify"]
    try:
        result = subprocess.run(command, env=cli_env(state_dir, SIGNSERVER_DATABASE_URL=f"sqlite:///{backup}"),
                                capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(backup.parent, 0o755)
    assert snapshot(backup) == before
    if journal_mode == "DELETE":
        assert result.returncode == 0 and "INTACT" in result.stdout, result.stdout + result.stderr
        return
    assert result.returncode == EXIT_CONFIG, result.stdout + result.stderr
    line = result.stderr.strip()
    assert "Traceback" not in result.stderr and len(line.splitlines()) == 1, result.stderr
    assert "WAL mode" in line and "signserver.db-shm cannot be made" in line and "copy the database" in line, line
