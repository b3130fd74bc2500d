"""The background work of two servers on one database (two nodes) runs in one of them: the one
holding the lease; a clean stop hands it to the other at once, and the audit log tells who sealed."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from signserver.audit.seal import SERVER_STARTED, SERVER_STOPPED
from signserver.grpc_api.server import BackgroundWork
from signserver.store.schema import audit_log
from tests.audit.test_seal_tampering import report
from tests.conftest import enrol, service_with


def lifecycle(service) -> list[str]:
    with service.database.read() as conn:
        return list(conn.execute(select(audit_log.c.event).where(audit_log.c.event.in_([SERVER_STARTED, SERVER_STOPPED]))
                                 .order_by(audit_log.c.seq)).scalars())


def wait_until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def two_nodes(config, fresh_service, clock):
    """Two services (as two nodes would have) on one database and one clock, each with its
    background work running."""
    enrol(fresh_service)  # a record to seal
    other = service_with(config, fresh_service.database.url, clock)
    works = [BackgroundWork(fresh_service, poll_seconds=0.05), BackgroundWork(other, poll_seconds=0.05)]
    for work in works:
        work.start()
    yield fresh_service, works
    for work in works:
        work.stop()


def holder_of(works: list[BackgroundWork]) -> BackgroundWork | None:
    term = works[0].lease.lease.current()
    return next((w for w in works if term is not None and w.lease.lease.holder == term.holder), None)


def test_one_node_runs_the_background_work_and_a_clean_stop_hands_it_over(two_nodes):
    service, works = two_nodes
    wait_until(lambda: works[0].lease.lease.current() is not None)
    first = holder_of(works)
    wait_until(lambda: lifecycle(service) != [])  # the holder says so once it holds the lease
    time.sleep(1)  # twenty rounds of both: the other asks for the lease each time, in vain
    assert holder_of(works) is first
    assert lifecycle(service) == [SERVER_STARTED]  # only the holder seals, and says so

    first.stop()
    second = next(w for w in works if w is not first)
    # The clock has not moved: the lease was released, not left to expire.
    wait_until(lambda: works[0].lease.lease.current() is not None)
    assert holder_of(works) is second
    wait_until(lambda: lifecycle(service) == [SERVER_STARTED, SERVER_STOPPED, SERVER_STARTED])
    result = report(service)
    assert result.intact, result.problems


def test_a_node_that_stops_renewing_is_replaced_once_the_lease_expires(two_nodes, clock):
    service, works = two_nodes
    wait_until(lambda: works[0].lease.lease.current() is not None)
    first = holder_of(works)
    second = next(w for w in works if w is not first)
    first._stop.set()  # its thread ends as a dead node's would: without a word, holding the lease
    first._thread.join(30)
    clock.advance(seconds=10)
    time.sleep(0.5)
    assert holder_of(works) is first  # within its term: nobody takes it
    clock.advance(seconds=6)
    wait_until(lambda: holder_of(works) is second)
    wait_until(lambda: lifecycle(service) == [SERVER_STARTED, SERVER_STARTED])
