"""Leases on the test store (SQLite, or PostgreSQL with SIGNSERVER_TEST_STORE=postgresql): one holder
at a time, another after expiry or a release, one winner of a race."""

from __future__ import annotations

import threading

import pytest

from signserver.clock import ManualClock
from signserver.store.database import Database
from signserver.store.leases import Lease, LeaseKeeper
from tests.conftest import database_url


@pytest.fixture
def database(tmp_path):
    database = Database(database_url(tmp_path / "leases.db"))
    database.migrate()
    yield database
    database.dispose()


def two_holders(database, clock, seconds: int = 15) -> tuple[Lease, Lease]:
    return (Lease(database, clock, "work", seconds, holder="node-a"),
            Lease(database, clock, "work", seconds, holder="node-b"))


def test_of_two_holders_one_has_the_lease(database):
    clock = ManualClock()
    a, b = two_holders(database, clock)
    term = a.acquire()
    assert term is not None and term.holder == "node-a"
    assert term.expires_at == clock.now().replace(microsecond=0) + (term.expires_at - term.acquired_at)
    assert b.acquire() is None
    assert a.current().holder == b.current().holder == "node-a"


def test_the_holder_renews_and_keeps_its_start(database):
    clock = ManualClock()
    a, b = two_holders(database, clock)
    first = a.acquire()
    clock.advance(seconds=10)
    renewed = a.acquire()
    assert renewed.acquired_at == first.acquired_at and renewed.expires_at > first.expires_at
    clock.advance(seconds=10)  # past the first term, within the renewed one
    assert b.acquire() is None


def test_another_takes_over_once_the_lease_expired(database):
    clock = ManualClock()
    a, b = two_holders(database, clock)
    a.acquire()
    clock.advance(seconds=14)
    assert b.acquire() is None
    clock.advance(seconds=1)
    taken = b.acquire()
    assert taken is not None and taken.holder == "node-b" and taken.acquired_at == clock.now().replace(microsecond=0)
    assert a.acquire() is None  # the one that stopped renewing has lost it
    assert a.current().holder == "node-b"


def test_a_release_hands_the_lease_over_at_once(database):
    clock = ManualClock()
    a, b = two_holders(database, clock)
    a.acquire()
    b.release()  # not b's to give up: changes nothing
    assert b.acquire() is None
    a.release()
    assert a.current() is None
    assert b.acquire().holder == "node-b"


def test_holding_one_lease_says_nothing_of_another(database):
    clock = ManualClock()
    assert Lease(database, clock, "work", holder="node-a").acquire() is not None
    assert Lease(database, clock, "other", holder="node-b").acquire() is not None


def test_of_holders_racing_for_a_new_lease_exactly_one_wins(database):
    clock = ManualClock()
    racers = [Lease(database, clock, "raced", holder=f"node-{i}") for i in range(8)]
    start = threading.Barrier(len(racers))
    won = []

    def race(lease: Lease) -> None:
        start.wait()
        if lease.acquire() is not None:
            won.append(lease.holder)

    threads = [threading.Thread(target=race, args=(lease,)) for lease in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(won) == 1
    assert racers[0].current().holder == won[0]


def test_of_holders_racing_for_an_expired_lease_exactly_one_wins(database):
    clock = ManualClock()
    Lease(database, clock, "raced", holder="gone").acquire()
    clock.advance(seconds=20)
    racers = [Lease(database, clock, "raced", holder=f"node-{i}") for i in range(8)]
    start = threading.Barrier(len(racers))
    won = []

    def race(lease: Lease) -> None:
        start.wait()
        if lease.acquire() is not None:
            won.append(lease.holder)

    threads = [threading.Thread(target=race, args=(lease,)) for lease in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(won) == 1


def test_a_keeper_tells_a_new_tenure_from_a_renewal(database):
    clock = ManualClock()
    a = LeaseKeeper(Lease(database, clock, "work", 15, holder="node-a"), clock)
    b = LeaseKeeper(Lease(database, clock, "work", 15, holder="node-b"), clock)
    assert a.keep() and a.began
    assert a.keep() and not a.began  # renewed: the same tenure
    assert not b.keep() and not b.held
    clock.advance(seconds=16)  # a stopped renewing: b takes over, then gives it up
    assert b.keep() and b.began
    b.release()
    assert a.keep() and a.began  # another had it in between: a new tenure, to be told as one


def test_a_keeper_asks_the_database_only_when_a_third_of_the_term_is_left(database):
    clock = ManualClock()
    a = LeaseKeeper(Lease(database, clock, "work", 15, holder="node-a"), clock)
    a.keep()
    before = a.lease.current().expires_at
    clock.advance(seconds=9)
    assert a.keep(renew=False) and a.lease.current().expires_at == before  # 6 s left of 15: not renewed
    clock.advance(seconds=1)
    assert a.keep(renew=False) and a.lease.current().expires_at > before  # 5 s left: renewed
    assert a.confirm()
    a.release()
    assert not a.confirm() and a.lease.current() is None
