"""The grace a rotation was given holds in every process: it is recorded on the old key's row, and
a server's background work, whose own grace is shorter, waits for it before retiring the key.

Rotations destroy master keys: these tests run on the rotation tests' own token.
"""

from __future__ import annotations

import datetime
import math

from sqlalchemy import select

from signserver.accounts.master_rotation import MasterRotation
from signserver.store.schema import master_keys
from tests.accounts.test_master_rotation import (  # noqa: F401 (fixtures)
    Holders,
    master_cli,
    master_of,
    rotation_of,
    service,
    states,
    token,
)

LONG_GRACE = datetime.timedelta(seconds=600)


def retire_after(service, label: str) -> datetime.datetime | None:
    with service.database.read() as conn:
        value = conn.execute(select(master_keys.c.retire_after).where(master_keys.c.label == label)).scalar()
    return None if value is None else datetime.datetime.fromtimestamp(value, datetime.timezone.utc)


def rotation_with(service, clock, grace: datetime.timedelta) -> MasterRotation:
    return MasterRotation(service.database, service.packages, service.master_keys, service.audit, clock,
                          retire_grace=grace)


def test_the_server_round_waits_for_the_longer_grace_of_the_rotation(service, clock):
    holders = Holders(service, clock)
    holder = holders.enrol()
    old = master_of(service, holder)
    rotated_at = clock.now()

    rotation_with(service, clock, LONG_GRACE).rotate("operator:test")

    assert retire_after(service, old) == rotated_at + LONG_GRACE
    server = rotation_of(service)  # the server's background work: the default grace, 60 s
    clock.advance(seconds=61)
    server.background_round()  # every package moves; the old key is needed by none
    assert states(service)[old] == "retiring" and service.master_keys.present(old)
    assert server.retire_unused("operator:test") == []
    clock.advance(seconds=LONG_GRACE.total_seconds() - 62)
    assert server.retire_unused("operator:test") == []  # a second before the grace ends
    clock.advance(seconds=1)
    assert server.retire_unused("operator:test") == [old]
    assert not service.master_keys.present(old)
    holders.sign(holder)


def test_an_activation_records_its_grace_for_the_key_it_replaces(service, clock):
    holders = Holders(service, clock)
    old = master_of(service, holders.enrol())
    rotation = rotation_with(service, clock, LONG_GRACE)
    pending = rotation.rotate("operator:test", activate=False)
    assert retire_after(service, old) is None  # still active: nothing to wait for yet
    clock.advance(minutes=30)  # the key ceremony
    activated_at = clock.now()

    rotation.activate(pending, "operator:test")

    assert retire_after(service, old) == activated_at + LONG_GRACE
    server = rotation_of(service)
    clock.advance(seconds=61)
    server.background_round()
    assert states(service)[old] == "retiring"
    clock.advance(seconds=LONG_GRACE.total_seconds())
    server.background_round()
    assert states(service)[old] == "retired"


def test_a_shorter_grace_of_the_rotation_leaves_the_server_its_own(service, clock):
    holders = Holders(service, clock)
    old = master_of(service, holders.enrol())
    rotation_with(service, clock, datetime.timedelta(0)).rotate("operator:test")
    server = rotation_of(service)

    server.background_round()
    assert states(service)[old] == "retiring"  # the server's 60 s still hold
    clock.advance(seconds=60)
    server.background_round()
    assert states(service)[old] == "retired"


def test_grace_left_is_the_later_of_both_graces(service, clock):
    holders = Holders(service, clock)
    holders.enrol()
    server = rotation_of(service)
    assert server.grace_left() == datetime.timedelta(0)  # nothing retiring
    rotation_with(service, clock, LONG_GRACE).rotate("operator:test")

    assert server.grace_left() == LONG_GRACE
    clock.advance(seconds=599)
    assert server.grace_left() == datetime.timedelta(seconds=1)
    clock.advance(seconds=5)
    assert server.grace_left() == datetime.timedelta(0)


def test_the_grace_given_to_the_rotate_command_is_recorded_for_the_server(service, clock, state_dir):
    holders = Holders(service, clock)
    holder = holders.enrol()
    old = master_of(service, holder)
    before = datetime.datetime.now(datetime.timezone.utc)

    rotated = master_cli(service, state_dir, "rotate", "--no-wait", "--grace-seconds", "600")

    assert rotated.returncode == 0, rotated.stderr
    after = datetime.datetime.now(datetime.timezone.utc)
    recorded = retire_after(service, old)
    assert recorded is not None
    assert math.floor((before + LONG_GRACE).timestamp()) <= recorded.timestamp()
    assert recorded.timestamp() <= math.ceil((after + LONG_GRACE).timestamp())
    # The server's clock, 61 s after the rotation: its background round moves the package and
    # keeps the old key, which operations begun under it may still need for 9 minutes.
    clock.advance(seconds=(after - clock.now()).total_seconds() + 61)
    server = rotation_of(service)
    server.background_round()
    assert master_of(service, holder) != old
    assert states(service)[old] == "retiring" and service.master_keys.present(old)
    clock.advance(seconds=540)
    server.background_round()
    assert states(service)[old] == "retired" and not service.master_keys.present(old)
