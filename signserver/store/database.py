"""The database: engine set-up (SQLite by default, PostgreSQL for several nodes), migrations,
transactions, and the one place where the driver's errors become signserver's."""

from __future__ import annotations

import logging
import os
import weakref
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from sqlalchemy import Connection, create_engine, event, inspect, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from signserver.config import DatabaseConfig
from signserver.errors import (
    ConfigurationError,
    StoreConflict,
    StoreRefused,
    StoreUnavailable,
    StoreValueRefused,
)
from signserver.store.arrays import send_text_arrays_in_binary
from signserver.store.liveness import check_idle_connections
from signserver.store.wal_checkpoints import DEFAULT_INTERVAL_SECONDS, FALLBACK_PAGES, WalCheckpoints
from signserver.store.writer_lock import WriterLock

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# Alembic's head revision, which tests/store/test_migrations.py keeps equal to the newest file
# of migrations/versions (each named after its revision): migrate() compares it with the
# database's without loading Alembic.
NEWEST_MIGRATION = "0032"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Held by the process that migrates a PostgreSQL database, so that workers and nodes starting
# together upgrade it once, one after the other (a transaction-scoped advisory lock).
MIGRATION_LOCK_KEY = 0x5167_6E53  # any constant of this application's own


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers go on while one process writes; the busy timeout makes writers from
    # several processes wait their turn instead of failing at once.
    dbapi_connection.isolation_level = None  # transactions are begun explicitly below
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_read_only(path: Path):
    """How a connection to a database checked as it is is made (see Database's ``read_only``):
    opened read-only, with isolation and the wait for a writer only. No journal mode (setting WAL
    rewrites the header of a file in rollback-journal mode), no synchronous setting, no foreign
    keys (nothing is written).

    Its first read is made here, so that a file SQLite cannot read without writing beside it is
    said at once, and plainly (the driver says "attempt to write a readonly database")."""
    def connect(dialect, _record, cargs, cparams):
        driver = dialect.loaded_dbapi
        try:
            connection = driver.connect(*cargs, **cparams)
            try:
                connection.isolation_level = None  # transactions are begun explicitly (Database._begun)
                connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
                connection.execute("SELECT count(*) FROM sqlite_master").fetchall()
            except driver.Error:
                connection.close()
                raise
        except driver.OperationalError as exc:
            raise driver.OperationalError(_unreadable(path, exc)) from exc
        return connection
    return connect


def _unreadable(path: Path, exc: Exception) -> str:
    """Why SQLite cannot read ``path`` read-only, said for the person who asked it to."""
    if not path.exists():
        return f"no database at {path}"
    if not os.access(path, os.R_OK):
        return f"{path} cannot be read by this user (permission denied)"
    missing = [f"{path.name}{suffix}" for suffix in ("-wal", "-shm") if not Path(f"{path}{suffix}").exists()]
    if f"{path.name}-shm" in missing and not os.access(path.parent, os.W_OK):
        # SQLite reads a database in WAL mode through its -wal file and the index of it in -shm,
        # which must be there or be made beside it, even to read.
        return (f"{path} is in WAL mode: SQLite reads it only with its -wal and -shm files beside it, and "
                f"{' and '.join(missing)} cannot be made in {path.parent} (not writable by this user): copy the "
                f"database (with its -wal file, if there is one) to a directory this user can write to, and check "
                f"the copy ({exc})")
    return f"{path} cannot be read: {exc}"


def _checkpoint_only_past_fallback(dbapi_connection, _record) -> None:
    # A connection of a process whose WalCheckpoints thread copies the log (see there).
    dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES}")


def _create_private(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does, and tighten one that others may read.

    The database holds password hashes, sealed OTP seeds and the audit log; SQLite would create it
    with the process's umask (often 0644). It gives its WAL and shared-memory files the database
    file's own mode, so those follow.

    An existing file is changed by its path only, never opened: closing any descriptor of a
    database file drops every POSIX lock this process holds on it, including those of SQLite's
    own connections, which corrupts the database (SQLite's "How To Corrupt", 2.2).
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return  # a new, empty file: no connection can hold a lock on it yet
    except FileExistsError:
        pass
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = file.stat().st_mode & 0o777
            if mode & 0o077:
                file.chmod(mode & 0o700)
                log.warning("%s was readable by other users (mode %o); it is now %o", file, mode, mode & 0o700)
        except FileNotFoundError:
            pass


# A forked child must not share its parent's connections: one hook for every engine, which
# keeps none of them alive (the suite and the CLI make many).
_ENGINES: "weakref.WeakSet[Engine]" = weakref.WeakSet()


def _forget_inherited_connections() -> None:
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_inherited_connections)

# Writer connections a forked child inherited (see _WriterConnection.close): kept, so that the
# child never closes them either.
_INHERITED_WRITERS: list[Connection] = []


class Database:
    """An engine plus the one way to run a transaction against it.

    SQLite: one writer at a time (BEGIN IMMEDIATE, queued on the WriterLock), readers on a WAL
    snapshot beside it. PostgreSQL: writers in READ COMMITTED, the server's default, taking row
    locks (SELECT ... FOR UPDATE, INSERT ... ON CONFLICT) wherever they read what they then
    change; readers in a REPEATABLE READ, READ ONLY transaction, one snapshot for all their
    statements as on SQLite.
    """

    def __init__(self, url: str, settings: DatabaseConfig | None = None, read_only: bool = False):
        """``read_only``: the database is read as it is and never changed, not even by opening it
        (an auditor checks a production database, or a backup that must stay as it was): on
        SQLite, the file is opened read-only (``mode=ro``) with none of the set-up a server does
        (WAL mode, the file's mode, its directory, the writer lock), and must exist; a file in WAL
        mode is read through its -wal and -shm files, which SQLite makes beside it (empty, with the
        file's mode) when they are not there, and without which it cannot read it; on PostgreSQL,
        every transaction is read-only (``default_transaction_read_only``), which the server
        enforces. :meth:`transaction`, :meth:`statements` and an upgrade are then refused.

        Raises: ConfigurationError: ``read_only`` with a SQLite database in memory."""
        settings = settings or DatabaseConfig()
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.read_only = read_only
        self._writers: WriterLock | None = None
        self._writer: _WriterConnection | None = None  # SQLite's, on a file (see _writing)
        self._path: Path | None = None  # SQLite's file
        self._leaves_checkpoints = False  # to WalCheckpoints (checkpoint_in_background)
        # The connection returned last is drawn first. A worker's calls then go to one connection
        # while one at a time needs it: on PostgreSQL one backend serves them, with its caches warm.
        # With the pool's default, oldest first, calls went round every connection the pool held,
        # each one a backend of its own on the same cores: under a single-digest SignHash load,
        # 10 backends shared the work instead of about 5, and PostgreSQL spent 10 to 30 % more CPU
        # per call (three runs of alternated measurements, README "PostgreSQL"). The connections
        # left idle for a while are those a peak reaches, which check_idle_connections checks.
        pool = dict(pool_size=settings.pool_size, max_overflow=settings.max_overflow,
                    pool_timeout=settings.pool_timeout_seconds, pool_use_lifo=True,
                    hide_parameters=True)  # errors in logs never show the values (hashes, sealed keys)
        if self.is_sqlite and read_only:
            parsed = make_url(url)
            if not parsed.database or parsed.database == ":memory:":
                raise ConfigurationError("database.url", "a database in memory cannot be opened read-only: "
                                                         "it holds nothing to read")
            self._path = Path(parsed.database)
            # SQLite's URI filename: mode=ro never creates the file, its directory or anything
            # else, and refuses every write (SQLITE_OPEN_READONLY).
            read_only_url = parsed.set(database=f"file:{quote(parsed.database)}").update_query_dict(
                {"mode": "ro", "uri": "true"})
            self.engine = create_engine(read_only_url, **pool)
            event.listen(self.engine, "do_connect", _sqlite_read_only(self._path))
        elif self.is_sqlite:
            path = make_url(url).database  # without a query string's options
            if path and path != ":memory:":
                self._path = Path(path)
                self._path.parent.mkdir(parents=True, exist_ok=True)
                _create_private(self._path)
                self._writers = WriterLock(Path(f"{path}-writer.lock"))
            self.engine: Engine = create_engine(url, **pool)
            event.listen(self.engine, "connect", _sqlite_pragmas)
            # The writer connection is closed with the engine's pool, and when no one holds this
            # Database any more (SQLAlchemy's engine lives on until the garbage collector's next
            # full pass): after either, this process holds the file open nowhere.
            writer = self._writer = _WriterConnection()
            event.listen(self.engine, "engine_disposed", lambda _engine: writer.close())
            weakref.finalize(self, writer.close)
        else:
            # A connection the server, a restart or a firewall closed while it sat in the pool is
            # replaced at checkout instead of failing the call that drew it (see README,
            # "PostgreSQL"), at the cost of a round trip, paid only after an idle spell.
            if read_only:
                # Set by the server for each of this engine's sessions: a write fails there
                # (read_only_sql_transaction), whatever a statement or a transaction asks.
                options = make_url(url).query.get("options")
                options = f"{options} " if isinstance(options, str) else ""
                pool["connect_args"] = {"options": options + "-c default_transaction_read_only=on"}
            self.engine = create_engine(url, **pool)
            check_idle_connections(self.engine, settings.ping_after_idle_ms / 1000)
            event.listen(self.engine, "connect", send_text_arrays_in_binary)
        _ENGINES.add(self.engine)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection in a transaction: committed on success, rolled back on any error.

        Raises: StoreUnavailable: the database cannot be reached, stays locked, or gave the
                    transaction up in a conflict with another (a deadlock, a serialization failure);
                StoreConflict: a unique value is already taken (another change came first);
                StoreValueRefused: a value does not fit its column;
                StoreRefused: the database refused a statement for another reason;
                ConfigurationError: the database was opened read-only.
        """
        self._refuse_if_read_only()
        if self._writer is None:  # PostgreSQL, or SQLite in memory
            with _store_errors(writing=True), self._begun(writing=True) as connection:
                yield connection
            return
        with _store_errors(writing=True), self._writers.held(), self._writing() as connection:
            yield connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection in a read-only transaction (it runs beside writers).

        Raises: as :meth:`transaction`.
        """
        with _store_errors(writing=False), self._begun(writing=False) as connection:
            yield connection

    @contextmanager
    def statements(self) -> Iterator[Connection]:
        """PostgreSQL only: a connection where every statement is a transaction of its own, with
        no BEGIN or COMMIT round trips: for a call whose reads need no common snapshot and whose
        writes are one statement (a database function such as ``spend_activation_token``).

        Raises: as :meth:`transaction`.
        """
        self._refuse_if_read_only()
        if self.is_sqlite:
            raise RuntimeError("statements() is for PostgreSQL: SQLite's writers queue for its write lock")
        with _store_errors(writing=True), self.engine.connect() as connection:
            # psycopg's autocommit, a flag on the client: no round trip, reset when the connection
            # goes back to the pool.
            connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection

    def _refuse_if_read_only(self) -> None:
        """Raises: ConfigurationError: the database was opened read-only."""
        if self.read_only:
            raise ConfigurationError("database.url", "the database was opened read-only, to be read as it is: "
                                                     "it takes no change from this process")

    def _writer_turn(self):
        return self._writers.held() if self._writers is not None else nullcontext()

    @contextmanager
    def _begun(self, writing: bool) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            if not self.is_sqlite and not writing:
                # psycopg begins with "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY": no extra
                # round trip; both are reset when the connection goes back to the pool.
                connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with connection.begin():
                if self.is_sqlite:
                    # pysqlite is left in autocommit mode (see _sqlite_pragmas) and transactions are
                    # begun here, straight at the driver (twice for every signature). A writing one
                    # takes the write lock as it starts: read-then-write transactions (lockout
                    # counters, the audit chain) then never race another process, nor fail on
                    # upgrading a read lock. Reads begin deferred and run beside writers (WAL).
                    _begin_at_driver(connection, "BEGIN IMMEDIATE" if writing else "BEGIN")
                yield connection

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """SQLite: the process's writer connection in a transaction that holds the write lock from
        its start (see :meth:`_begun`). The caller holds the writer lock, so one thread at a time
        uses the connection, which stays open from one transaction to the next: drawing it from
        the pool and giving it back (with the pool's rollback on return) cost about 10 µs of CPU
        per transaction on its own, twice that under load, on every signature's way."""
        connection = self._writer.connection(self.engine)
        with connection.begin():
            _begin_at_driver(connection, "BEGIN IMMEDIATE")
            yield connection

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent; processes starting together
        migrate one after the other). An upgrade that fails keeps nothing of itself: it runs in one
        transaction, and may be run again.

        Raises: ConfigurationError: the database cannot be reached; it is at a migration this
            version does not know (a newer version upgraded it); it holds signserver's tables
            without a migration version; it refused the upgrade (the reason said); or it was
            opened read-only and is not at the newest migration.
        """
        if self.at_newest_migration():
            return
        self._refuse_if_read_only()
        self._run_migrations("upgrade", "head")

    def downgrade(self, revision: str) -> None:
        """Bring the schema down to ``revision`` (the newest migration of the version to go back
        to; "base" for none), keeping what the older schema has room for.

        Raises: ConfigurationError: as :meth:`migrate`, or ``revision`` is not one of the migrations.
        """
        self._refuse_if_read_only()
        self._run_migrations("downgrade", revision)

    def _run_migrations(self, direction: str, revision: str) -> None:
        # Alembic is needed only when there is something to migrate: importing it and loading its
        # scripts would cost every command of the command line a fifth of a second.
        from alembic import command
        from alembic.config import Config as AlembicConfig
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError

        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self._migrating() as connection:
                if not self.is_sqlite:
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                _check_migratable(connection, ScriptDirectory.from_config(config))
                config.attributes["connection"] = connection
                getattr(command, direction)(config, revision)
        except (OperationalError, PoolTimeout) as exc:
            raise ConfigurationError("database.url", f"cannot open the database: {_reason(exc)}") from exc
        except DBAPIError as exc:
            raise ConfigurationError("database.url", f"the database refused the {direction} of its schema, "
                                                     f"which left it as it was: {_reason(exc)}") from exc
        except CommandError as exc:  # a revision Alembic does not know
            raise ConfigurationError("database.url", f"cannot {direction} the database's schema: {exc}") from exc
        except RuntimeError as exc:  # a migration refused the data it found, saying what to do
            raise ConfigurationError("database.url", f"the {direction} of the database's schema stopped, "
                                                     f"leaving it as it was: {exc}") from exc

    @contextmanager
    def _migrating(self) -> Iterator[Connection]:
        """A writing transaction for migrations. On SQLite, with foreign keys off while it runs,
        as SQLite's own procedure for schema changes has it: a migration that rebuilds a table
        drops the old one, and with them on, that drop deletes its rows first, with every row of
        other tables that refers to them (ON DELETE CASCADE). What refers to a missing row at the
        end, and did not before, is refused before the commit (rows an earlier hand-made change left
        dangling are not the migration's doing)."""
        if not self.is_sqlite:
            with self._begun(writing=True) as connection:
                yield connection
            return
        with self._writer_turn(), self.engine.connect() as connection:
            driver = connection.connection.driver_connection
            driver.execute("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction: set before it
            try:
                with connection.begin():
                    _begin_at_driver(connection, "BEGIN IMMEDIATE")
                    before = _dangling_references(driver)
                    yield connection
                    broken = sorted(table for table, rows in _dangling_references(driver).items()
                                    if rows > before.get(table, 0))
                    if broken:
                        raise RuntimeError("rows of " + ", ".join(broken) + " would refer to rows that no "
                                           "longer exist")
            finally:
                try:
                    driver.execute("PRAGMA foreign_keys=ON")
                except _driver_errors(connection) as exc:  # never back to the pool with them off
                    connection.invalidate(exc)

    def current_migration(self) -> str | None:
        """The migration the schema is at (None for a database without a schema yet).

        Raises: ConfigurationError: the database cannot be reached.
        """
        try:
            with self._begun(writing=False) as connection:
                try:
                    found = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
                except DBAPIError:  # no version table: a new database
                    return None
        except (OperationalError, PoolTimeout) as exc:
            raise ConfigurationError("database.url", f"cannot open the database: {_reason(exc)}") from exc
        return found[0] if found else None

    def at_newest_migration(self) -> bool:
        """Whether the schema is at the newest migration this version ships, read without Alembic
        (False for a database without a schema yet).

        Raises: ConfigurationError: the database cannot be reached (said at once, rather than
            after a second try from :meth:`migrate`: an unreachable host costs a connect timeout).
        """
        return self.current_migration() == NEWEST_MIGRATION

    def checkpoint_in_background(self, run_here: bool, interval: float = DEFAULT_INTERVAL_SECONDS
                                 ) -> WalCheckpoints | None:
        """From now on, SQLite's write-ahead log is copied into the database by a thread of one
        serving process, where the commits of every process's connections did
        (store/wal_checkpoints.py): the calls then never wait for a checkpoint. Every serving
        process calls this once, before its first call: its commits then leave the log alone up to
        ``FALLBACK_PAGES``. The one given ``run_here`` runs the thread, a round every ``interval``
        seconds, and stops it on the way out (a thread per process would take the writer lock as
        many times more often).

        Returns the running thread's handle; None where it runs elsewhere, on PostgreSQL (no
        log to copy), and on a database opened read-only (nothing to copy from here).

        Raises: RuntimeError: called twice.
        """
        if self._path is None or self.read_only:
            return None
        if self._leaves_checkpoints:
            raise RuntimeError("checkpoint_in_background is called once per process")
        self._leaves_checkpoints = True
        event.listen(self.engine, "connect", _checkpoint_only_past_fallback)
        self.engine.dispose()  # connections opened before would still checkpoint at 1,000 pages
        if not run_here:
            return None
        checkpoints = WalCheckpoints(self._path, self._writers.held, interval)
        checkpoints.start()
        return checkpoints

    def has_idle_connection(self) -> bool:
        """Whether the pool holds a connection no one uses, so that a transaction begins without
        waiting for one (an event loop may then run a short one itself)."""
        checked_in = getattr(self.engine.pool, "checkedin", None)
        return checked_in is not None and checked_in() > 0

    def dispose(self) -> None:
        """Close pooled connections (call in a forked child before first use)."""
        self.engine.dispose(close=False)


class _WriterConnection:
    """SQLite: the one connection through which a process writes (Database._writing), opened
    on first use and again after it was closed or invalidated. A forked child's engines are
    disposed of as it starts (_forget_inherited_connections), which forgets the parent's here."""

    def __init__(self):
        self._connection: Connection | None = None
        self._pid = 0  # the process that opened it

    def connection(self, engine: Engine) -> Connection:
        if self._connection is not None and self._connection.invalidated:
            self.close()
        if self._connection is None:
            self._connection, self._pid = engine.connect(), os.getpid()
        return self._connection

    def close(self) -> None:
        """Close this process's connection, if open; forget one a forked child inherited, without
        closing it (SQLite's rule: a connection opened before fork() is never used in the child)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._pid != os.getpid():
            _INHERITED_WRITERS.append(connection)
            return
        connection.invalidate()  # the driver's connection closed, not given back to the pool
        connection.close()


def _driver_errors(connection: Connection) -> type[Exception]:
    """The base class of the errors of ``connection``'s driver."""
    return connection.dialect.loaded_dbapi.Error


def _begin_at_driver(connection: Connection, statement: str) -> None:
    """SQLite: begin the transaction at the driver (see Database._begun).

    Raises: sqlalchemy.exc.DBAPIError (OperationalError: the write lock stayed with another
        program past the busy timeout), as from ``Connection.execute``.
    """
    driver_errors = _driver_errors(connection)
    try:
        connection.connection.driver_connection.execute(statement)
    except driver_errors as exc:
        raise DBAPIError.instance(statement, None, exc, driver_errors, dialect=connection.dialect) from exc


def _dangling_references(driver) -> dict[str, int]:
    """SQLite: how many rows of each table refer to a row that does not exist."""
    counts: dict[str, int] = {}
    for row in driver.execute("PRAGMA foreign_key_check"):
        counts[row[0]] = counts.get(row[0], 0) + 1
    return counts


def _check_migratable(connection: Connection, script) -> None:
    """Refuse a database the migrations cannot start from: one at a revision they do not know (a
    newer version of signserver upgraded it), or one with signserver's tables but no version.

    Raises: ConfigurationError.
    """
    from signserver.store.schema import metadata

    inspector = inspect(connection)
    tables = set(inspector.get_table_names())
    found = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() \
        if "alembic_version" in tables else []
    known = {migration.revision for migration in script.walk_revisions()}
    unknown = sorted(set(found) - known)
    if unknown:
        raise ConfigurationError("database.url", (
            f"the database's schema is at migration {', '.join(unknown)}, which this version of signserver "
            f"does not know (its newest is {NEWEST_MIGRATION}): a newer version upgraded it. Run that version, "
            f"or restore the database from before that upgrade"))
    ours = sorted(tables & set(metadata.tables))
    if not found and ours:
        raise ConfigurationError("database.url", (
            f"the database holds signserver's tables ({', '.join(ours[:3])}{', ...' if len(ours) > 3 else ''}) "
            f"but no migration version (table alembic_version): it was not made by signserver's migrations, "
            f"or lost its version. Use an empty database, or restore this one from a backup"))


@contextmanager
def _store_errors(writing: bool) -> Iterator[None]:
    """SQLAlchemy's and the driver's errors as signserver's, with the database's own words but
    never the statement's values (``writing``: in a transaction that may change data)."""
    try:
        yield
    except PoolTimeout as exc:
        raise StoreUnavailable("no database connection came free in time; the server is busy") from exc
    except OperationalError as exc:
        # PostgreSQL's SQLSTATE class 40: the transaction was given up for another's sake.
        if getattr(exc.orig, "sqlstate", "") and exc.orig.sqlstate.startswith("40"):
            raise StoreUnavailable(f"the database gave the transaction up in a conflict with another; "
                                   f"try again ({_reason(exc)})") from exc
        raise StoreUnavailable(f"the database does not answer: {_reason(exc)}") from exc
    except IntegrityError as exc:
        if _is_unique_violation(exc):
            raise StoreConflict(f"the database already holds that record: {_reason(exc)}") from exc
        raise StoreRefused(f"the database refused a change: {_reason(exc)}") from exc
    except DataError as exc:
        raise StoreValueRefused(f"the database cannot keep a value: {_reason(exc)}") from exc
    except DBAPIError as exc:
        # PostgreSQL's read_only_sql_transaction in a writer: the server takes no changes for now
        # (a standby after a fail-over, or one set read-only for maintenance). In a reader, the
        # statement is at fault.
        if writing and getattr(exc.orig, "sqlstate", None) == "25006":
            raise StoreUnavailable(f"the database takes no changes for now (a read-only server); "
                                   f"try again ({_reason(exc)})") from exc
        raise StoreRefused(f"the database refused a statement: {_reason(exc)}") from exc


def _is_unique_violation(exc: IntegrityError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate == "23505"  # PostgreSQL's unique_violation
    return "UNIQUE constraint failed" in str(exc.orig)


def _reason(exc: Exception) -> str:
    """The database's message without its detail lines (PostgreSQL's DETAIL names the values)."""
    orig = getattr(exc, "orig", None) or exc
    diagnostic = getattr(orig, "diag", None)
    primary = getattr(diagnostic, "message_primary", None) if diagnostic is not None else None
    lines = (primary or str(orig)).strip().splitlines()
    return lines[0] if lines else type(orig).__name__
