"""The RA's own store, on SQLite (and on PostgreSQL with SIGNSERVER_TEST_STORE=postgresql): its
migrations match its schema, renewals round-trip, optimistic concurrency, the audit chain."""

from __future__ import annotations

import datetime
from dataclasses import replace

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, inspect, select, text, update

from signserver.ra import codes
from signserver.ra import renewal as machine
from signserver.ra.errors import ConcurrentUpdate, RenewalNotFound
from signserver.ra.renewal import FINAL_STATES, State
from signserver.ra.store import repository
from signserver.ra.store.database import MIGRATIONS
from signserver.ra.store.schema import FINAL_STATE_VALUES, audit_trail, metadata, outbox
from signserver.ra.store.schema import email_verifications as codes_table
from tests.ra.conftest import KUAN, START, opened_renewal

TOKEN_HASH = "cd" * 32  # a holder token's SHA-256


def test_the_migrations_make_the_schema(ra_database):
    with ra_database.transaction() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": "ra_alembic_version"})
        differences = compare_metadata(context, metadata)
    assert differences == []


def _schema_and_revision(database) -> tuple[dict, str]:
    with database.transaction() as conn:
        inspector = inspect(conn)
        tables = {table: ([c["name"] for c in inspector.get_columns(table)],
                          sorted((i["name"], bool(i["unique"])) for i in inspector.get_indexes(table)))
                  for table in inspector.get_table_names()}
        return tables, conn.execute(text("SELECT version_num FROM ra_alembic_version")).scalar()


def _alembic(conn) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def test_migrating_again_changes_nothing(ra_database):
    before, revision = _schema_and_revision(ra_database)
    assert revision == ScriptDirectory.from_config(_alembic(None)).get_current_head()
    ra_database.migrate()
    assert _schema_and_revision(ra_database) == (before, revision)


def test_the_newest_migration_goes_down_and_up_again(ra_database):
    with ra_database.transaction() as conn:
        command.downgrade(_alembic(conn), "ra0002")
    with ra_database.transaction() as conn:
        assert "ra_code_limits" not in inspect(conn).get_table_names()
    ra_database.migrate()
    with ra_database.transaction() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": "ra_alembic_version"})
        assert compare_metadata(context, metadata) == []


def test_the_final_states_of_the_schema_are_the_machine_s():
    assert set(FINAL_STATE_VALUES) == {state.value for state in FINAL_STATES}


def test_one_open_renewal_per_certificate_however_many_final_ones(ra_database):
    first = opened_renewal(ra_database, KUAN, START)
    with pytest.raises(ConcurrentUpdate, match="opened meanwhile"):
        opened_renewal(ra_database, KUAN, START)
    with ra_database.transaction() as conn:
        repository.save_renewal(conn, machine.refuse(first, "renew in person", START))
    second = opened_renewal(ra_database, KUAN, START)
    with ra_database.transaction() as conn:
        repository.save_renewal(conn, machine.refuse(second, "renew in person", START))
        assert repository.open_renewal_of(conn, first.serial) is None
    assert opened_renewal(ra_database, KUAN, START, serial="another").state is State.AWAITING_CONFIRMATION


def test_the_certificates_under_renewal_are_read_from_the_open_renewals_alone(ra_database):
    """What the operators' dashboard asks of the certificates it lists: the finished renewals,
    which the RA keeps for good, are not read (on SQLite, the plan searches the index of the open
    renewals)."""
    finished = opened_renewal(ra_database, KUAN, START, serial="f1")
    with ra_database.transaction() as conn:
        repository.save_renewal(conn, machine.refuse(finished, "renew in person", START))
    opened_renewal(ra_database, KUAN, START, serial="0a")
    opened_renewal(ra_database, KUAN, START, serial="f1")  # the same certificate's renewal, again
    statements = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))
    event.listen(ra_database.engine, "before_cursor_execute", seen)
    try:
        with ra_database.transaction() as conn:
            assert repository.serials_with_open_renewal(conn, ["f1", "0a", "b2", "0a"]) == {"f1", "0a"}
            assert repository.serials_with_open_renewal(conn, []) == set()
    finally:
        event.remove(ra_database.engine, "before_cursor_execute", seen)
    [(statement, parameters)] = [(s, p) for s, p in statements if "ra_renewals" in s]
    if ra_database.is_sqlite:
        with ra_database.transaction() as conn:
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).fetchall()
        assert [row[-1] for row in plan] == ["SEARCH ra_renewals USING INDEX ux_ra_renewals_open_serial (serial=?)"]


def test_a_renewal_round_trips(ra_database):
    renewal = opened_renewal(ra_database, KUAN, START)
    assert renewal.version == 1 and renewal.emails == KUAN.emails and renewal.expires == START + datetime.timedelta(days=45)
    moved = machine.give_notice(machine.confirm(renewal, "op", START), START, token_hash=TOKEN_HASH)
    moved = replace(machine.record_consent(moved, "consent-9", START), face_score=0.875,
                    refusal="the registry does not answer", refusal_reason="registry_unavailable")
    with ra_database.transaction() as conn:
        saved = repository.save_renewal(conn, moved)
    assert saved == replace(moved, version=2)
    with ra_database.transaction() as conn:
        assert repository.find_holder(conn, KUAN.account) == KUAN
        assert repository.open_renewal_of(conn, renewal.serial) == saved
        assert [r.id for r in repository.list_renewals(conn, states=[State.AWAITING_IDENTITY])] == [renewal.id]
        assert repository.list_renewals(conn, states=[State.CONFIRMED]) == []
        with pytest.raises(RenewalNotFound):
            repository.get_renewal(conn, "nothing")


def test_a_write_over_an_older_version_is_refused(ra_database):
    renewal = opened_renewal(ra_database, KUAN, START)
    with ra_database.transaction() as conn:
        repository.save_renewal(conn, machine.confirm(renewal, "first", START))
    with pytest.raises(ConcurrentUpdate):
        with ra_database.transaction() as conn:
            repository.save_renewal(conn, machine.confirm(renewal, "second", START))
    with ra_database.transaction() as conn:
        assert repository.get_renewal(conn, renewal.id).confirmed_by == "first"


def test_a_failed_transaction_leaves_nothing(ra_database):
    renewal = opened_renewal(ra_database, KUAN, START)
    with pytest.raises(RuntimeError):
        with ra_database.transaction() as conn:
            repository.save_renewal(conn, machine.confirm(renewal, "op", START))
            repository.audit(conn, START, "op", "renewal_confirmed", renewal.id)
            raise RuntimeError("stop")
    with ra_database.transaction() as conn:
        assert repository.get_renewal(conn, renewal.id).state is State.AWAITING_CONFIRMATION
        assert repository.audit_entries(conn) == []


def test_verifications_keep_the_hash_never_the_code(ra_database):
    renewal = opened_renewal(ra_database, KUAN, START)
    verification, code = codes.issue(renewal.id, KUAN.emails[0], START, 300)
    with ra_database.transaction() as conn:
        repository.add_verification(conn, verification)
        stored = repository.verifications(conn, renewal.id, KUAN.emails[0])[0]
        rows = [tuple(row) for row in conn.exec_driver_sql("SELECT * FROM ra_email_verifications")]
    assert stored == replace(verification, id=stored.id)
    assert code not in repr(rows)


def test_the_audit_trail_is_chained(ra_database):
    with ra_database.transaction() as conn:
        for action in ("renewal_opened", "renewal_confirmed", "notice_sent"):
            repository.audit(conn, START, "op", action, "r1", "detail")
        assert repository.verify_trail(conn) is None
        entries = repository.audit_entries(conn)
        assert [e["previous_hash"] for e in entries[1:]] == [e["hash"] for e in entries[:-1]]
        conn.execute(update(audit_trail).where(audit_trail.c.id == entries[1]["id"]).values(actor="someone else"))
        assert repository.verify_trail(conn) == entries[1]["id"]


def test_the_outbox_keeps_a_message_until_it_is_sent(ra_database):
    with ra_database.transaction() as conn:
        assert repository.queue_email(conn, START, ["a@example.mo", "b@example.mo"], "Subject", "Body") == 2
        due = repository.due_emails(conn, START)
        repository.email_failed(conn, due[0].id, 1, START + datetime.timedelta(seconds=10))
        repository.email_sent(conn, due[1].id)
        assert [m.recipient for m in repository.due_emails(conn, START)] == []
        assert [m.recipient for m in repository.due_emails(conn, START + datetime.timedelta(seconds=10))] == \
            ["a@example.mo"]


def test_instants_after_2038_round_trip(ra_database):
    late = datetime.datetime(2101, 3, 1, tzinfo=datetime.timezone.utc)
    renewal = opened_renewal(ra_database, KUAN, START, expires=late)
    with ra_database.transaction() as conn:
        assert repository.get_renewal(conn, renewal.id).expires == late


def test_a_stale_read_still_counts_every_attempt_at_a_code(ra_database):
    """Two guesses that read the verification before either wrote (parallel requests under READ
    COMMITTED) both count: the store adds one to what it holds, not to what was read."""
    renewal = opened_renewal(ra_database, KUAN, START)
    verification, code = codes.issue(renewal.id, KUAN.emails[0], START, 300)
    with ra_database.transaction() as conn:
        repository.add_verification(conn, verification)
        read = repository.verifications(conn, renewal.id, KUAN.emails[0])[0]
    wrong = "000000" if code != "000000" else "111111"
    counted, matched = codes.attempt(read, wrong, START, 5)
    assert not matched
    for _ in range(2):
        with ra_database.transaction() as conn:
            assert repository.record_attempt(conn, counted, 5)
    with ra_database.transaction() as conn:
        assert repository.verifications(conn, renewal.id, KUAN.emails[0])[0].attempts == 2
        conn.execute(update(codes_table).where(codes_table.c.id == read.id).values(attempts=5))
        assert not repository.record_attempt(conn, counted, 5)  # used up, however stale the read
        assert repository.verifications(conn, renewal.id, KUAN.emails[0])[0].attempts == 5


def test_holder_requests_are_counted_in_the_store_and_never_written_back(ra_database):
    renewal = opened_renewal(ra_database, KUAN, START)
    with ra_database.transaction() as conn:
        assert [repository.count_holder_request(conn, renewal.id, "face_comparisons", 2) for _ in range(3)] == \
            [True, True, False]
        repository.save_renewal(conn, machine.confirm(renewal, "op", START))  # read before the counting
        assert repository.get_renewal(conn, renewal.id).face_comparisons == 2
        repository.reset_holder_limits(conn, renewal.id)
        assert repository.get_renewal(conn, renewal.id).face_comparisons == 0


def test_an_address_is_blocked_at_its_limits_until_reopened(ra_database):
    renewal = opened_renewal(ra_database, KUAN, START)
    address = KUAN.emails[0]
    with ra_database.transaction() as conn:
        assert [repository.count_code_sent(conn, renewal.id, address, 2) for _ in range(3)] == [True, True, False]
        assert not repository.code_limits_of(conn, renewal.id, address).blocked
        assert not repository.count_code_failure(conn, renewal.id, address, 2, START).blocked
        assert repository.count_code_failure(conn, renewal.id, address, 2, START).blocked_at == START
        assert not repository.count_code_sent(conn, renewal.id, KUAN.emails[0], 5)  # blocked
        assert repository.code_limits_of(conn, renewal.id, KUAN.emails[1]) == codes.CodeLimits()
        repository.reset_holder_limits(conn, renewal.id)
        assert repository.code_limits_of(conn, renewal.id, address) == codes.CodeLimits()


def test_a_message_past_its_use_is_discarded_unsent(ra_database):
    expiry = START + datetime.timedelta(seconds=300)
    with ra_database.transaction() as conn:
        repository.queue_email(conn, START, ["a@example.mo"], "Code", "123456", discard_after=expiry)
        repository.queue_email(conn, START, ["a@example.mo"], "Notice", "Body")
        assert repository.discard_stale_emails(conn, expiry - datetime.timedelta(seconds=1)) == 0
        assert repository.discard_stale_emails(conn, expiry) == 1
        assert [row.subject for row in conn.execute(select(outbox))] == ["Notice"]
