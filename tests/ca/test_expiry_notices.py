"""The expiry notices' pass at a national scale: each certificate due is noticed once, in batches;
a pass reads only the certificates not noticed yet, through the index of those; and one over
certificates all noticed writes nothing."""

from __future__ import annotations

import datetime

from sqlalchemy import event, insert, select

from signserver.ca import repository
from signserver.ca.expiry_notices import EXPIRY_NOTICE, NOTICE_BATCH
from signserver.clock import ManualClock, epoch_seconds
from signserver.store.schema import certificates, outbox
from tests.conftest import enrol, service_with
from tests.ca.test_certificate_pages import copies, query_plan

DUE = 2 * NOTICE_BATCH + 50  # three batches, the last short


def _service(config, tmp_path):
    clock = ManualClock(datetime.datetime(2026, 11, 21, tzinfo=datetime.timezone.utc))
    service = service_with(config, tmp_path / "notices.db", clock)
    service.ca.initialise("operator:test")
    created, _ = enrol(service, "notice-holder")
    now = epoch_seconds(clock.now())
    with service.database.transaction() as conn:
        template = dict(conn.execute(select(certificates).limit(1)).mappings().first())
        rows = (copies(template, DUE, 1, created.account.id, lambda i: now - 1000, lambda i: now + 86400 + i)
                + copies(template, 40, 10_000, created.account.id, lambda i: now - 1000, lambda i: now + 400 * 86400))
        conn.execute(insert(certificates), rows)
    return service


def _writes(service):
    """The UPDATE and INSERT statements the database is sent while the block runs, counted."""
    seen = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("UPDATE", "INSERT")):
            seen.append(statement)
    event.listen(service.database.engine, "before_cursor_execute", count)
    return seen, lambda: event.remove(service.database.engine, "before_cursor_execute", count)


def test_each_certificate_due_is_noticed_once_and_a_later_pass_writes_nothing(config, tmp_path):
    service = _service(config, tmp_path)
    assert service.ca.send_expiry_notices() == DUE

    with service.database.read() as conn:
        noticed = conn.execute(select(certificates.c.serial).where(certificates.c.expiry_notice_at.is_not(None))
                               ).scalars().all()
        mails = conn.execute(select(outbox.c.id)).scalars().all()
    assert len(noticed) == DUE and len(mails) >= DUE  # the enrolment's own mails besides
    seen, stop = _writes(service)
    try:
        assert service.ca.send_expiry_notices() == 0
    finally:
        stop()
    assert seen == []  # the certificates noticed are not read again, nor marked again


def test_the_pass_reads_the_certificates_due_through_their_index(config, tmp_path):
    service = _service(config, tmp_path)
    now = service.clock.now()
    query = repository.due_expiry_notices_query(now, now + EXPIRY_NOTICE, NOTICE_BATCH)
    with service.database.read() as conn:
        plan = query_plan(conn, query)
    assert "ix_certificates_due_expiry_notice" in plan and "TEMP B-TREE" not in plan and "Sort" not in plan, plan
