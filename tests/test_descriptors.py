"""The descriptor reserve counts open descriptors at most once per interval of its clock, and
counts each admission in between as a descriptor taken."""

from __future__ import annotations

import datetime
import os

from signserver.clock import ManualClock
from signserver.descriptors import RECOUNT_INTERVAL, DescriptorReserve


def test_descriptors_are_counted_again_only_after_the_recount_interval():
    clock = ManualClock()
    reserve = DescriptorReserve(reserve=0, clock=clock)
    before = reserve.free()
    opened = [os.open(os.devnull, os.O_RDONLY) for _ in range(20)]
    try:
        assert reserve.free() == before  # not read again within the interval
        assert reserve.available() and reserve.available()
        assert reserve.free() == before - 2  # each admission counts as one descriptor taken
        clock.advance(milliseconds=RECOUNT_INTERVAL / datetime.timedelta(milliseconds=1))
        assert reserve.free() == before - 20  # read again: the files, not the admissions
    finally:
        for descriptor in opened:
            os.close(descriptor)


def test_admissions_between_counts_reach_the_reserve():
    clock = ManualClock()
    reserve = DescriptorReserve(reserve=0, clock=clock)
    # Counted once, the clock standing still: descriptors other threads of this process open or
    # close meanwhile (a server of an earlier test ending) change nothing below.
    reserve.reserve = reserve.free() - 3  # three free above the reserve
    assert [reserve.available() for _ in range(5)] == [True, True, True, False, False]
