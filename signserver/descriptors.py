"""File descriptors: the process's limit, and a reserve kept for the HSM and the database.

SoftHSM opens its token files for every operation and SQLite opens its database, journal and
shared-memory files: when a process runs out of descriptors, the HSM stops answering ("the token
does not answer") and the database fails, for every client at once. Work that a client can
multiply (document streams, their spool files) is therefore refused while fewer than a reserve of
descriptors are free, long before the process's limit is reached.
"""

from __future__ import annotations

import datetime
import logging
import os
import resource

from signserver.clock import Clock, SystemClock

log = logging.getLogger(__name__)

# Enough for the HSM's token files, the database's files, the gRPC and HTTP listeners, the
# forkserver's pipes and a burst of new connections while the refusals go out.
DEFAULT_RESERVE = 128
_FD_DIRECTORY = "/proc/self/fd"
# Descriptors are counted again at most this often: listing /proc/self/fd costs some
# microseconds per hundred entries, which adds up once the limit is a hard limit in the tens of
# thousands and every admission asks. In between, each admission counts as one more descriptor.
RECOUNT_INTERVAL = datetime.timedelta(milliseconds=100)


def raise_open_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (children inherit it) and return
    the soft limit now in force. Distributions start services with a soft limit of 1,024 and a
    hard limit many times that: a server should use what it is allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log.info("open-file limit raised from %d to %d", soft, hard)
            return hard
        except (ValueError, OSError) as exc:  # a container may forbid it; keep the soft limit
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


def open_descriptors() -> int:
    """How many descriptors this process has open (Linux: entries of /proc/self/fd)."""
    try:
        # The directory's own descriptor, open while it is read, is not counted.
        return len(os.listdir(_FD_DIRECTORY)) - 1
    except OSError:  # no /proc: nothing to measure with, so never refuse for it
        return 0


class DescriptorReserve:
    """Tells whether a reserve of descriptors is still free under the soft limit.

    The count of open descriptors is read at most once per ``recount_interval`` (by ``clock``);
    between readings, every admission (every ``available()`` that answered yes) is taken to
    have opened one more descriptor, so a burst cannot slip past the reserve unseen.
    Only used from one thread (the event loop's).
    """

    def __init__(self, reserve: int = DEFAULT_RESERVE, clock: Clock | None = None,
                 recount_interval: datetime.timedelta = RECOUNT_INTERVAL):
        self.reserve = reserve
        self._clock = clock or SystemClock()
        self._recount_interval = recount_interval
        self._counted_at: datetime.datetime | None = None
        self._counted = 0
        self._admitted_since = 0

    def _open(self) -> int:
        now = self._clock.now()
        if self._counted_at is None or not (self._counted_at <= now < self._counted_at + self._recount_interval):
            self._counted = open_descriptors()
            self._counted_at = now
            self._admitted_since = 0
        return self._counted + self._admitted_since

    def free(self) -> int:
        """Descriptors that may still be opened before the soft limit (as last counted)."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return 1 << 30
        return soft - self._open()

    def available(self) -> bool:
        """Whether more than the reserve is free; a yes counts as one descriptor taken."""
        if self.free() > self.reserve:
            self._admitted_since += 1
            return True
        return False
