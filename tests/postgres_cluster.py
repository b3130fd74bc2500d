"""A throw-away PostgreSQL cluster for a test run: initdb in a temporary directory, a server on a
Unix socket there (no TCP port to race for), fsync off, removed when the run ends.

PostgreSQL refuses to run as root, and the suite runs as root in CI: the cluster then belongs to
an unprivileged system user (``postgres`` where Debian's package made it, else ``nobody``), and its
commands run as that user through ``setpriv``. Databases are made from a template that is migrated
once, so a fresh database costs a file copy and ``prepare_database`` finds nothing to do.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import psycopg

from signserver.store.database import Database

SPARED_BY_REAPER = "SIGNSERVER_TESTS_REAPER_SPARES"  # tests/worker_reaper.py
ADMIN_USER = "signserver"  # the cluster's superuser; trust authentication on its own socket only
TEMPLATE = "signserver_template"
# Every fresh service keeps a small pool open until it is collected; the suite makes hundreds.
MAX_CONNECTIONS = 400
SERVER_SETTINGS = {
    "listen_addresses": "''",  # the socket in the cluster's directory only
    "max_connections": str(MAX_CONNECTIONS),
    "fsync": "off",  # a test cluster outlives no crash: durability is not what is tested
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "64MB",
}


def postgres_bindir() -> Path:
    """Where initdb and pg_ctl are: ``pg_config --bindir``, else the newest of Debian's versions.

    Raises: FileNotFoundError: PostgreSQL's server binaries are not installed.
    """
    candidates = []
    if shutil.which("pg_config"):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if found.returncode == 0:
            candidates.append(Path(found.stdout.strip()))
    candidates += sorted((Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
                         key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise FileNotFoundError("PostgreSQL's server (initdb, pg_ctl) is not installed: apt-get install postgresql")


# Where the cluster's directory goes when it has this much room: a memory file system. On a disk,
# a test database (a copy of the template, about 8 MB and 300 files, CREATE DATABASE with its
# checkpoint) took 110 to 180 ms, and removing a run's clusters at its end tens of seconds; in
# memory 12 ms, and 2 s. Each test's databases are dropped when it ends, so that a cluster holds a
# few dozen at a time.
MEMORY_DIRECTORY = Path("/dev/shm")
MEMORY_DIRECTORY_ROOM = 2 * 1024**3


def _cluster_parent() -> str | None:
    """MEMORY_DIRECTORY when it has MEMORY_DIRECTORY_ROOM free, else None (the temporary directory)."""
    try:
        stats = os.statvfs(MEMORY_DIRECTORY)
    except OSError:
        return None
    return str(MEMORY_DIRECTORY) if stats.f_bavail * stats.f_frsize >= MEMORY_DIRECTORY_ROOM else None


def _name_for(key: str) -> str:
    return "t_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The user the cluster runs as when this process is root; None when it is not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL")


class ClusterFailed(RuntimeError):
    """initdb or pg_ctl failed."""


def migrate_core(url: str) -> None:
    """Migrate the core's schema into the empty database at ``url`` and close every connection
    (a template with one cannot be copied; on SQLite, the last one closed checkpoints the log)."""
    database = Database(url)
    database.migrate()
    database.engine.dispose()


class PostgresCluster:
    """A cluster started for one test run; ``url_for`` hands out databases made from the template."""

    def __init__(self):
        self._bindir = postgres_bindir()
        self._owner = _unprivileged_user()
        self.directory = Path(tempfile.mkdtemp(prefix="signserver-pg-", dir=_cluster_parent()))
        self._data = self.directory / "data"
        self._made: dict[str, str] = {}  # database name -> the key it was made for
        self._templates: set[str] = set()  # those of template(): the core's, the RA's
        self._lock = threading.Lock()
        self._admin = None
        self._running = False
        self._watchdog: subprocess.Popen | None = None
        self._pid = os.getpid()  # a forked child (some tests fork) must never stop the cluster

    # --- life -----------------------------------------------------------------------------

    def start(self) -> "PostgresCluster":
        """initdb, start the server, migrate the template.

        Raises: ClusterFailed: initdb or pg_ctl failed (with what they said).
        """
        if self._owner is not None:
            os.chown(self.directory, self._owner.pw_uid, self._owner.pw_gid)
        self._run("initdb", "-D", str(self._data), "-U", ADMIN_USER, "--auth=trust", "--no-sync",
                  "--encoding=UTF8", "--locale=C")
        options = " ".join(f"-c {name}={value}" for name, value in SERVER_SETTINGS.items())
        self._running = True
        self._run("pg_ctl", "start", "--wait", "-D", str(self._data), "-l", str(self.directory / "server.log"),
                  "-o", f"-k {self.directory} {options}")
        self._watch()
        self._admin = psycopg.connect(self._dsn("postgres"), autocommit=True)
        self.template(TEMPLATE, migrate_core)
        return self

    def stop(self) -> None:
        """Stop the server and remove the cluster's directory (idempotent, never raises)."""
        if os.getpid() != self._pid:
            return
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._running:
            self._running = False
            try:
                self._run("pg_ctl", "stop", "-D", str(self._data), "-m", "immediate", "--wait")
            except ClusterFailed:
                pass  # already gone: the directory goes all the same
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- databases ------------------------------------------------------------------------

    def url_for(self, key: str, template: str = TEMPLATE) -> str:
        """The URL of the database that ``key`` (a path, a name) stands for: made from the migrated
        template (the core's, or one of :meth:`template`) on first use, the same one on every later
        call with the same key."""
        name = _name_for(key)
        with self._lock:
            if name not in self._made:
                self._admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
                self._made[name] = key
        return self._url(name)

    def template(self, name: str, migrate: Callable[[str], None]) -> str:
        """A template database ``name``, made by ``migrate(url)`` (which must leave no connection
        open: a template with a connection cannot be copied) on first use; returns ``name`` for
        :meth:`url_for`."""
        with self._lock:
            if name not in self._templates:
                self._admin.execute(f'CREATE DATABASE "{name}"')
                migrate(self._url(name))
                self._templates.add(name)
        return name

    def copy_url(self, key: str, original: str) -> str:
        """The URL of a new database that ``key`` stands for, a copy of the one ``original`` stands
        for (which nobody may be connected to meanwhile)."""
        name = _name_for(key)
        with self._lock:
            self._admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_name_for(original)}" STRATEGY FILE_COPY')
            self._made[name] = key
        return self._url(name)

    def empty_url(self, key: str) -> str:
        """The URL of the database that ``key`` stands for, made anew without a single table (for
        tests of the migrations themselves); ``url_for(key)`` then names the same database."""
        name = _name_for(key)
        with self._lock:
            self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self._admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
            self._made[name] = key
        return self._url(name)

    def drop_under(self, folder: str) -> None:
        """Drop the databases made for keys inside ``folder`` (a test's temporary directory, once
        the test is over), closing what is still connected to them."""
        prefix = folder.rstrip("/") + "/"
        with self._lock:
            for name in [name for name, key in self._made.items() if key.startswith(prefix)]:
                self._disconnect(name)
                self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                del self._made[name]

    def _disconnect(self, name: str, patience: float = 5.0) -> None:
        """End the sessions still connected to database ``name`` (the pools of a test's services,
        which go when they are collected) and wait until they are gone. DROP DATABASE ... WITH
        (FORCE) ends them too, but looks again only 100 ms later: most tests' teardown waited that
        long on PostgreSQL."""
        others = "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        self._admin.execute(f"SELECT pg_terminate_backend(pid) {others}", (name,))
        deadline = time.monotonic() + patience
        while self._admin.execute(f"SELECT count(*) {others}", (name,)).fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.002)

    def _url(self, database: str) -> str:
        return f"postgresql+psycopg://{ADMIN_USER}@/{database}?host={self.directory}"

    def _dsn(self, database: str) -> str:
        return f"host={self.directory} user={ADMIN_USER} dbname={database}"

    def _watch(self) -> None:
        """A watchdog that stops the server and removes its directory should this process die
        without cleaning up (SIGTERM or SIGKILL skip pytest's finalizers and atexit alike)."""
        stop = shlex.join(self._command("pg_ctl", "stop", "-D", str(self._data), "-m", "immediate"))
        script = (f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
                  f"{stop} >/dev/null 2>&1; rm -rf {shlex.quote(str(self.directory))}")
        # Spared by the worker's reaper (tests/worker_reaper.py), which stops the rest of what a
        # killed worker started: this stops the cluster and removes its directory after it.
        self._watchdog = subprocess.Popen(["sh", "-c", script], cwd="/", start_new_session=True,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL,
                                          env={**os.environ, SPARED_BY_REAPER: "1"})

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self._bindir / tool), *args]
        if self._owner is not None:
            command = ["setpriv", f"--reuid={self._owner.pw_uid}", f"--regid={self._owner.pw_gid}",
                       "--clear-groups", *command]
        return command

    def _run(self, tool: str, *args: str) -> None:
        """Raises: ClusterFailed: the tool failed."""
        done = subprocess.run(self._command(tool, *args), cwd=self.directory, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise ClusterFailed(f"{tool} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}")
