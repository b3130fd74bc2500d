"""FaultLog: a log line for a failure that any client can repeat, written at most once a minute.

A fault that one request triggers, every request triggers: logged per request, a client could
fill the disk and bury everything else in the log. The first occurrence is logged in full (with
its traceback); those within the next interval are only counted, and the count is given with the
next line written.
"""

from __future__ import annotations

import logging
import threading

from signserver.clock import Clock

DEFAULT_INTERVAL_SECONDS = 60.0


class FaultLog:
    """Writes to ``logger`` at ``level`` at most once per ``interval`` seconds of ``clock``.
    Thread-safe."""

    def __init__(self, logger: logging.Logger, clock: Clock, level: int = logging.ERROR,
                 interval: float = DEFAULT_INTERVAL_SECONDS):
        self._logger = logger
        self._clock = clock
        self._level = level
        self._interval = interval
        self._last: float | None = None  # when a line was last written
        self._unwritten = 0  # occurrences since then that were only counted
        self._lock = threading.Lock()

    def record(self, message: str, *args: object, with_traceback: bool = False) -> None:
        """Log ``message % args`` unless a line was written within the interval (then count it).
        ``with_traceback``: add the exception being handled. Never raises."""
        now = self._clock.now().timestamp()
        with self._lock:
            # abs(): a clock set back must not silence the log for good.
            if self._last is not None and abs(now - self._last) < self._interval:
                self._unwritten += 1
                return
            unwritten, self._unwritten, self._last = self._unwritten, 0, now
        if unwritten:
            message += f" (and {unwritten} times since this was last logged)"
        self._logger.log(self._level, message, *args, exc_info=with_traceback)
