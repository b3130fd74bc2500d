"""WriterLock: SQLite writers of every thread and server process take turns in a kernel queue.

SQLite admits one writer at a time. A writer that finds the database locked polls: it sleeps 1,
2, 5, 10, ... up to 100 ms between tries (the busy timeout), so under load most of the time goes
to sleeping after the lock was already free, and latency grows long tails. Taking an exclusive
``flock`` on a file beside the database before beginning a writing transaction makes the waiters
queue in the kernel instead, and the next one starts the moment the lock is released. Processes
that do not take it (another tool opening the database) are still kept out by SQLite itself.
"""

from __future__ import annotations

import fcntl
import os
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from signserver.errors import StoreUnavailable


class WriterLock:
    """The lock on one database's writers. Its file is opened on first use and closed when the
    object goes: a process that opens and drops databases (a command, a test) keeps no descriptor
    of the ones it dropped."""

    def __init__(self, path: Path):
        self._path = path
        self._threads = threading.RLock()  # flock is per open file: threads queue here first
        self._depth = 0
        self._fd: int | None = None
        self._closer: weakref.finalize | None = None  # closes _fd once this object is collected
        _LOCKS.add(self)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock (re-entrant within a thread).

        Raises: StoreUnavailable: the lock file cannot be opened or locked.
        """
        with self._threads:
            if self._depth == 0:
                fcntl.flock(self._descriptor(), fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._descriptor(), fcntl.LOCK_UN)

    def _after_fork_in_child(self) -> None:
        """Start afresh in a forked child: the parent's thread lock and descriptor are not its own
        (a descriptor inherited across fork shares the parent's lock, so they would not exclude
        each other). Closing the inherited copy leaves the parent's lock as it is."""
        self._threads = threading.RLock()
        self._depth = 0
        if self._closer is not None:
            self._closer()
        self._fd = self._closer = None

    def _descriptor(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StoreUnavailable(f"cannot open the database's writer lock {self._path}: {exc}") from None
            self._closer = weakref.finalize(self, os.close, self._fd)
        return self._fd


# Every lock of this process, for the one hook that starts them afresh in a forked child (a hook
# per lock would outlive its lock: os.register_at_fork keeps what it is given for good).
_LOCKS: weakref.WeakSet[WriterLock] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for lock in list(_LOCKS):
        lock._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
