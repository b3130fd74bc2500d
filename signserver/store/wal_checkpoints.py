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

One process of the database runs the thread (Database.checkpoint_in_background); every serving
process's connections still checkpoint by themselves past ``FALLBACK_PAGES``: a bound on the log
if the thread falls behind or stops. The process must not fork once the thread has started (a
worker only forks to exec at once).

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
from urllib.parse import quote

from signserver.errors import StoreUnavailable

log = logging.getLogger(__name__)

# The log's size, in pages, at which a committing connection checkpoints itself after all (40 MB
# at SQLite's default page size): far above what a round's interval lets the log grow to.
FALLBACK_PAGES = 10_000
DEFAULT_INTERVAL_SECONDS = 0.2
STOP_WAIT_SECONDS = 2.0  # well inside the supervisor's grace for a stopping worker


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
        self._failing = False  # the last round failed: said once, and again when rounds succeed
        self._settled_at: int | None = None  # the log's length when it was last wholly copied
        self._thread = threading.Thread(target=self._run, name="wal-checkpoints", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the thread after the round under way, waiting for it a moment at most (the log is
        left for the next round of whichever process runs them next, or for SQLite's own
        checkpoint when the last connection closes)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=STOP_WAIT_SECONDS)
        if self._thread.is_alive():
            # Its round waits for the writer lock: the process's exit ends it, and the lock with it.
            log.warning("the write-ahead log's checkpoint round still waits; leaving it to the exit")
            return
        with self._round:
            self._close()

    def checkpoint(self) -> tuple[int, int] | None:
        """One round: copy the log into the database (see the module's docstring).

        Returns the log's length in pages and how many of them are now in the database, as the
        last pass found them (equal when the log is wholly copied; -1 and -1 when the database
        is not in WAL mode); None when another connection was checkpointing (another process's
        round, or a commit past ``FALLBACK_PAGES``), which does the work.

        Never call it while holding the writer lock: the thread's round may hold this object's
        turn while it waits for that lock.

        Raises: StoreUnavailable: the database refused the checkpoint or cannot be opened (the
            thread logs it and tries again next round); as ``writer_turn``.
        """
        with self._round:
            try:
                if self._connection is None:
                    # mode=rw: a database file that went away is an error, not a new empty file
                    self._connection = sqlite3.connect(f"file:{quote(str(self._path))}?mode=rw", uri=True,
                                                       isolation_level=None, check_same_thread=False)
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
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    @staticmethod
    def _pass(connection: sqlite3.Connection) -> tuple[int, int] | None:
        """The pages in the log and those copied; None while another connection checkpoints."""
        busy, logged, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return None if busy else (logged, copied)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            # Said once when rounds start failing and once when they succeed again, not five times
            # a second; the connections' own checkpoints bound the log meanwhile.
            try:
                self.checkpoint()
            except Exception as exc:  # StoreUnavailable, or a defect: the thread must outlive it
                if not self._failing:
                    log.warning("checkpointing the database's write-ahead log failed; trying again: %s", exc,
                                exc_info=not isinstance(exc, StoreUnavailable))
                self._failing = True
                continue
            if self._failing:
                log.info("checkpointing the database's write-ahead log works again")
                self._failing = False
