"""WalCheckpoints: a serving process's thread that moves SQLite's write-ahead log into the database
file, so that no call waits for it.

Left to itself, SQLite checkpoints in the connection whose COMMIT takes the log past 1,000 pages:
that COMMIT copies the log's pages into the database and syncs both files while its process still
holds the WriterLock. A SignHash writes about ten pages, so under a single-digest load one call in
a hundred or so did it, with every other worker's writers queued behind it.

Here a thread does it every ``interval`` seconds, in two passes. The first runs beside the writers
(SQLite's PASSIVE checkpoint never blocks them) and copies nearly everything. The second holds the
WriterLock and copies only what was appended meanwhile: the log is then wholly in the database,
and the next writer starts it afresh from its beginning. Without that second pass, writers that
never pause would keep the log from ever being restarted, and it would grow without bound.

The process's connections still checkpoint by themselves past ``FALLBACK_PAGES``: a bound on the
log if this thread falls behind or stops.

Measured against servers that checkpoint in their commits, alternately, under a single-digest
SignHash load: about 2 % more calls and a p99 latency about a tenth lower (README, "Checkpoints
off the calls' way").
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Callable, ContextManager

from signserver.errors import StoreUnavailable

log = logging.getLogger(__name__)

# The log's size, in pages, at which a committing connection checkpoints itself after all (40 MB
# at SQLite's default page size): far above what a round's interval lets the log grow to.
FALLBACK_PAGES = 10_000
DEFAULT_INTERVAL_SECONDS = 0.2


class WalCheckpoints:
    """The checkpointing thread of one process's database; see the module's docstring."""

    def __init__(self, path: Path, writer_turn: Callable[[], ContextManager[None]],
                 interval: float = DEFAULT_INTERVAL_SECONDS):
        """``path``: the database file; ``writer_turn``: holds its WriterLock (Database's)."""
        self._path = path
        self._writer_turn = writer_turn
        self._interval = interval
        # A connection of its own, not one of the engine's pool: one taken from the pool would
        # send a call to another connection, whose page cache is cold.
        self._connection: sqlite3.Connection | None = None
        self._round = threading.Lock()  # one round at a time: the thread's, or a caller's
        self._stop = threading.Event()
        self._settled_at: int | None = None  # the log's length when it was last wholly copied
        self._thread = threading.Thread(target=self._run, name="wal-checkpoints", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the thread after the round under way (the log is left for SQLite's own checkpoint
        when the last connection closes, or for the next start)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        with self._round:
            self._close()

    def checkpoint(self) -> tuple[int, int] | None:
        """One round: copy the log into the database (see the module's docstring).

        Returns the log's length in pages and how many of them are now in the database, as the
        last pass found them (equal when the log is wholly copied); None when another process's
        round was under way (it does the work).

        Raises: StoreUnavailable: the database refused the checkpoint or cannot be opened (the
            thread logs it and tries again next round); as ``writer_turn``.
        """
        with self._round:
            try:
                if self._connection is None:
                    self._connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
                found = self._pass(self._connection)
                if found is None or found[0] == found[1] == self._settled_at:
                    return found  # nothing written since the last round, or another's round: no lock to take
                with self._writer_turn():
                    found = self._pass(self._connection)
            except sqlite3.Error as exc:
                self._close()  # opened afresh next round
                raise StoreUnavailable(f"the write-ahead log cannot be checkpointed: {exc}") from exc
            self._settled_at = found[0] if found is not None and found[0] == found[1] else None
            return found

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @staticmethod
    def _pass(connection: sqlite3.Connection) -> tuple[int, int] | None:
        """The pages in the log and those copied; None while another connection checkpoints."""
        busy, logged, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return None if busy else (logged, copied)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.checkpoint()
            except StoreUnavailable as exc:  # the connections' own checkpoints bound the log meanwhile
                log.warning("checkpointing the database's write-ahead log failed; trying again: %s", exc)
            except Exception:  # the thread must outlive one failure
                log.exception("checkpointing the database's write-ahead log failed; trying again")
