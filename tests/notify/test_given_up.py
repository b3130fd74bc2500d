"""A message given up is marked by its own column, ``outbox.given_up_at`` (the moment it was given
up), not by a value of ``next_attempt_at`` that no clock reaches: the sender sets it, nothing
given up is sent or counted as waiting, and migration 0023 turns the older marks into it, on
SQLite and PostgreSQL alike (the test store)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import select, text

from signserver.clock import epoch_seconds
from signserver.notify.outbox import queue_email
from signserver.store.database import MIGRATIONS, Database
from signserver.store.schema import outbox
from tests.conftest import empty_database_url
from tests.notify.test_sender import Mailbox, queue, rows

OLD_MARK = 2 ** 62  # what marked a message given up before migration 0023


def migrations(conn) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def test_a_refused_message_is_marked_given_up_when_it_was(mailing_service, smtp_socket, clock):
    from tests.notify.conftest import serve

    controller = serve(Mailbox(refused=("gone@example.mo",)), smtp_socket)
    try:
        queue(mailing_service, clock, "gone@example.mo", "one@example.mo")
        assert mailing_service.outbox.send_due() == 1
    finally:
        controller.stop()
    gone, sent = rows(mailing_service)["gone@example.mo"], rows(mailing_service)["one@example.mo"]
    assert gone.given_up_at == epoch_seconds(clock.now()) and gone.next_attempt_at < OLD_MARK
    assert sent.given_up_at is None


def test_the_upgrade_marks_given_up_messages_by_their_column_and_the_downgrade_back(tmp_path, clock):
    database = Database(empty_database_url(tmp_path / "outbox.db"))
    try:
        with database.transaction() as conn:
            command.upgrade(migrations(conn), "0022")
            queue_email(conn, clock.now(), ["given-up@example.mo", "waiting@example.mo", "sent@example.mo"],
                        "account_unlocked", holder_name="Holder", username="holder", time="now")
            conn.execute(text("UPDATE outbox SET next_attempt_at = :mark, attempts = 3, last_error = 'gave up' "
                              "WHERE recipient = 'given-up@example.mo'"), {"mark": OLD_MARK})
            conn.execute(text("UPDATE outbox SET sent_at = created_at WHERE recipient = 'sent@example.mo'"))
        database.migrate()
        with database.read() as conn:
            upgraded = {r.recipient: r for r in conn.execute(select(outbox))}
        queued = epoch_seconds(clock.now())
        assert upgraded["given-up@example.mo"].given_up_at is not None
        assert upgraded["given-up@example.mo"].given_up_at >= queued
        assert upgraded["waiting@example.mo"].given_up_at is None
        assert upgraded["sent@example.mo"].given_up_at is None
        assert max(r.next_attempt_at for r in upgraded.values()) == queued  # no mark left in it

        with database.transaction() as conn:
            command.downgrade(migrations(conn), "0022")
            downgraded = {r.recipient: r.next_attempt_at
                          for r in conn.execute(text("SELECT recipient, next_attempt_at FROM outbox"))}
        assert downgraded == {"given-up@example.mo": OLD_MARK, "waiting@example.mo": queued,
                              "sent@example.mo": queued}
    finally:
        database.dispose()
