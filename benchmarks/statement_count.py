"""Counting the statements a served process sends to its database, from inside that process.

    python -m benchmarks.statement_count DIRECTORY serve [signserver serve's options]

runs the `signserver` command line with counters installed first, so that every worker it forks
counts as well: each statement executed on a DBAPI cursor (SQLAlchemy's, and those that
signserver/store/prepared.py runs straight on the driver, which SQLAlchemy's events never see)
and each transaction (BEGIN ... COMMIT or ROLLBACK, two more round trips on PostgreSQL).

- SQLite reports every statement it runs to a trace callback (``sqlite3.Connection.
  set_trace_callback``), set on a connection each time a pool hands it out;
- psycopg has no such hook: ``Cursor.execute`` / ``executemany`` (one statement per row, though
  psycopg pipelines them) and ``Connection.commit`` / ``rollback`` are wrapped (a commit or
  rollback outside a transaction sends nothing and is not counted); the liveness ping of a
  connection idle in the pool (signserver/store/liveness.py) is a statement like any other (";").

The server's background thread is left out: it works on its own clock, whatever the calls.

Counting is off until the benchmark turns it on (:meth:`StatementCounter.counting`), so that the
measured windows pay for it only a flag read per statement and per pool checkout, on both stores
alike. Each process keeps its two counters in a file of its own in DIRECTORY, mapped in memory;
:meth:`StatementCounter.totals` sums the files.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# The server's background thread (grpc_api/server.py: e-mail, audit seals, leases, retention) runs
# on its own clock, whatever the calls: its statements are not a call's.
UNCOUNTED_THREADS = frozenset({"background"})
CONTROL = "control"  # one 8-byte word: 1 while counting
_COUNTERS = struct.Struct("=qq")  # statements, transactions (native int64, as ctypes writes them)


@dataclass(frozen=True)
class Counts:
    statements: int
    transactions: int

    def __sub__(self, other: "Counts") -> "Counts":
        return Counts(self.statements - other.statements, self.transactions - other.transactions)


class StatementCounter:
    """The benchmark's side: a directory the served process counts into, and the command that
    starts `signserver` with its counters."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONTROL).write_bytes(bytes(8))

    def command(self, *signserver_args: str) -> list[str]:
        """The command line that runs ``signserver SIGNSERVER_ARGS`` counting (the ``benchmarks``
        package must be importable: run from the repository, or with it on PYTHONPATH)."""
        return [sys.executable, "-m", "benchmarks.statement_count", str(self.directory), *signserver_args]

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Count while inside (calls in flight as it starts or ends may be counted in part)."""
        self._switch(1)
        try:
            yield
        finally:
            self._switch(0)

    def totals(self) -> Counts:
        """What every process has counted so far."""
        statements = transactions = 0
        for file in self.directory.iterdir():
            if file.name.isdigit():
                s, t = _COUNTERS.unpack(file.read_bytes()[:_COUNTERS.size])
                statements, transactions = statements + s, transactions + t
        return Counts(statements, transactions)

    def _switch(self, value: int) -> None:
        with open(self.directory / CONTROL, "r+b") as control:
            control.write(struct.pack("=q", value))


# --- the served process's side -----------------------------------------------------------------

class _ProcessCounters:
    """This process's counters in ``DIRECTORY/<pid>``, made on first use (after the fork)."""

    def __init__(self, directory: Path):
        self._directory = directory
        with open(directory / CONTROL, "rb") as control:
            self._control = mmap.mmap(control.fileno(), 8, prot=mmap.PROT_READ)
        self._lock = threading.Lock()
        self._pid = None
        self._values = None
        os.register_at_fork(after_in_child=self._forget)

    def on(self) -> bool:
        """Counting is on, and this thread counts."""
        return self._control[0] == 1 and threading.current_thread().name not in UNCOUNTED_THREADS

    def add(self, statements: int = 0, transactions: int = 0) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._open()
            self._values[0] += statements
            self._values[1] += transactions

    def _open(self) -> None:
        path = self._directory / str(os.getpid())
        with open(path, "w+b") as file:
            file.truncate(_COUNTERS.size)
            self._map = mmap.mmap(file.fileno(), _COUNTERS.size)
        self._values = (ctypes.c_int64 * 2).from_buffer(self._map)
        self._pid = os.getpid()

    def _forget(self) -> None:
        self._lock = threading.Lock()  # a lock held by another thread at the fork stays held
        self._pid = None


_TRANSACTION_ENDS = ("COMMIT", "ROLLBACK", "END")


def _install(counters: _ProcessCounters) -> None:
    import psycopg
    from psycopg.pq import TransactionStatus
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    def trace(sql: str) -> None:
        if not counters.on():  # turned off while this connection was out
            return
        word = sql.lstrip()[:8].upper()
        if word.startswith("BEGIN"):
            counters.add(transactions=1)
        elif not word.startswith(_TRANSACTION_ENDS) and not word.startswith("--"):  # "--": inside a trigger
            counters.add(statements=1)

    @event.listens_for(Pool, "checkout")
    def _traced(dbapi_connection, _record, _proxy) -> None:
        set_trace = getattr(dbapi_connection, "set_trace_callback", None)  # sqlite3 only
        if set_trace is not None:
            set_trace(trace if counters.on() else None)

    execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany
    commit, rollback = psycopg.Connection.commit, psycopg.Connection.rollback

    def counted_execute(self, *args, **kwargs):
        if counters.on():
            counters.add(statements=1)
        return execute(self, *args, **kwargs)

    def counted_executemany(self, query, params_seq, *args, **kwargs):
        if counters.on():
            params_seq = list(params_seq)
            counters.add(statements=len(params_seq))
        return executemany(self, query, params_seq, *args, **kwargs)

    def ending(end):
        def counted_end(self):
            if counters.on() and self.pgconn.transaction_status != TransactionStatus.IDLE:
                counters.add(transactions=1)
            return end(self)
        return counted_end

    psycopg.Cursor.execute, psycopg.Cursor.executemany = counted_execute, counted_executemany
    psycopg.Connection.commit, psycopg.Connection.rollback = ending(commit), ending(rollback)


def main() -> int:
    directory, *signserver_args = sys.argv[1:]
    _install(_ProcessCounters(Path(directory)))
    from signserver.cli.main import main as signserver

    return signserver(signserver_args)


if __name__ == "__main__":
    sys.exit(main())
