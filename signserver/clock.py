"""Time as a parameter: the domain asks a clock, tests pass one they move by hand."""

from __future__ import annotations

import datetime
import threading
import zoneinfo
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime.datetime:
        """The current time, timezone-aware UTC."""


class SystemClock:
    """The real time."""

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.timezone.utc)


class ManualClock:
    """A clock that moves only when told to (for tests and simulations)."""

    def __init__(self, start: datetime.datetime | None = None):
        self._now = start or datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
        self._lock = threading.Lock()

    def now(self) -> datetime.datetime:
        with self._lock:
            return self._now

    def advance(self, **delta) -> None:
        """Move forward by ``datetime.timedelta(**delta)``."""
        with self._lock:
            self._now += datetime.timedelta(**delta)


def epoch_seconds(moment: datetime.datetime) -> int:
    """Whole seconds since 1970 (how the store keeps instants, portably)."""
    return int(moment.timestamp())


def from_epoch(seconds: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def time_zone(name: str) -> zoneinfo.ZoneInfo | None:
    """The IANA time zone called ``name`` (``Asia/Macau``), or None when the time zone database has
    none of that name. ``zoneinfo.ZoneInfo`` opens the file a name stands for: besides its own
    errors it fails with the file system's, for a name too long for a file or one naming a folder
    of the database ("America")."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None
