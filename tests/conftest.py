"""Shared fixtures: a fresh token for the test session, made by softhsm-setup (SoftHSM, the
default) or by opencryptoki-setup (openCryptoki's soft token, with SIGNSERVER_TEST_TOKEN=opencryptoki;
`make test` runs tests/hsm and tests/opencryptoki so beside the SoftHSM runs), and the store the
tests' databases live in: SQLite files (the default) or, with SIGNSERVER_TEST_STORE=postgresql,
databases of a PostgreSQL cluster started for the run (`make test` runs every test so beside the
SQLite run). ``database_url`` is the one place that decides a test's database."""

from __future__ import annotations

import atexit
import contextlib
import datetime
import email
import errno
import gc
import logging
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import tomllib
import uuid
from email import policy
from dataclasses import replace
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import parse_qs, urlparse

import pytest
from aiosmtpd.controller import Controller

from signserver.accounts.manager import Enrolment
from signserver.accounts.model import NewAccount
from signserver.clock import ManualClock
from signserver.config import Config, env_name, load_config
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.hsm.capabilities import TokenCapabilities, key_algorithm_mechanisms
from signserver.monitoring.logs import CountingHandler
from signserver.secret import Secret
from signserver.service import SignService
from tests.postgres_cluster import PostgresCluster, migrate_core

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
# The TLS context of the tests' httpx clients of plain-HTTP servers (the RA, the registry): httpx
# otherwise makes one for every client and every httpx.get, loading all of certifi's CA
# certificates each time (about 20 ms of CPU, a minute over the suite) though no TLS is spoken.
LOOPBACK_TLS = ssl.create_default_context()
SIGNSERVER = Path(sys.executable).parent / "signserver"
TEST_TOKEN = os.environ.get("SIGNSERVER_TEST_TOKEN", "softhsm")
ON_OPENCRYPTOKI = TEST_TOKEN == "opencryptoki"
if TEST_TOKEN not in ("softhsm", "opencryptoki"):
    raise pytest.UsageError(f"SIGNSERVER_TEST_TOKEN is softhsm or opencryptoki, not {TEST_TOKEN!r}")
TEST_STORE = os.environ.get("SIGNSERVER_TEST_STORE", "sqlite")
ON_POSTGRESQL = TEST_STORE == "postgresql"
if TEST_STORE not in ("sqlite", "postgresql"):
    raise pytest.UsageError(f"SIGNSERVER_TEST_STORE is sqlite or postgresql, not {TEST_STORE!r}")

# What the tests' services cost, cheaper than the defaults where the cost is not what a test is
# about: argon2id at 1 MiB and one pass (OWASP's 19 MiB and two cost about 25 ms of CPU per
# password, thousands of times over the suite), the CA's root and issuing keys on P-256 (an
# RSA-3072 pair costs SoftHSM a second or more, at every CA set-up) and the key ceremony's
# transport keys on RSA-2048 (RSA-3072: 0.76 s each). In this process's environment
# and in cli_env's, so that the servers and commands the tests start see them too. The tests of
# those costs themselves (the lockout races, the refusal timing, the default CA) take the
# defaults' values back: production_costs, production_environ.
TEST_COST_SETTINGS = {"accounts.argon2_memory_kib": "1024", "accounts.argon2_time_cost": "1",
                      "hsm.transport_key_bits": "2048"}
if not ON_OPENCRYPTOKI:  # whose soft token makes no EC keys
    TEST_COST_SETTINGS.update({"ca.root_key_algorithm": "ec-p256", "ca.issuing_key_algorithm": "ec-p256"})
# The RA's operators' passwords likewise (the RA's own settings): the tests of the sign-in's cost
# keep the defaults (tests/ra/test_operator_accounts.py).
RA_OPERATOR_COSTS = {"operator_argon2_memory_kib": 1024, "operator_argon2_time_cost": 1}
TEST_COSTS = {env_name(key): value for key, value in TEST_COST_SETTINGS.items()}
TEST_COSTS.update({f"SIGNSERVER_RA_{key.upper()}": str(value) for key, value in RA_OPERATOR_COSTS.items()})
os.environ.update(TEST_COSTS)


def operator_hasher():
    """The hasher the RA's settings give its operator accounts under TEST_COSTS."""
    from signserver.ra.operator_accounts import password_hasher

    return password_hasher(RA_OPERATOR_COSTS["operator_argon2_memory_kib"],
                           RA_OPERATOR_COSTS["operator_argon2_time_cost"])

_cluster: PostgresCluster | None = None  # the run's PostgreSQL cluster, on PostgreSQL
_on_sqlite_only_test = False  # a test marked sqlite_only is running: its databases are SQLite files


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which makes the run's workers from these options
def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: about SQLite itself (its files, locks or old "
                                       "databases): its databases are SQLite files whatever the test store")
    config.addinivalue_line("markers", "one_store: what it tests does not depend on the store, or it uses "
                                       "none (a browser's rendering, listening sockets, the test runner, the "
                                       "registry's client, the HSM layer): `make test` runs it in the SQLite run only")
    _workers_under_reapers(config)
    # A test process holds about 450,000 objects, most of them the 2,200 modules it has imported,
    # and each full collection walks them all (0.4 s). Over tests/ca, ra, grpc_api and hsm, with
    # the machine busy 390 s, the two test processes' collectors took 26 s with the interpreter's
    # thresholds and 18 s with these (timed with gc.callbacks). Cyclic garbage still goes, later.
    gc.set_threshold(10_000, 50, 50)


def pytest_collection_finish(session):
    """What the run has imported by now stays to its end: frozen, so that no collection walks it
    again (with the fork server's modules frozen too, the collectors' time over tests/cli, ca,
    grpc_api and ra went from 20.8 s to 16.9 s, timed with gc.callbacks)."""
    gc.collect()
    gc.freeze()


def _workers_under_reapers(config) -> None:
    """In a pytest-xdist run's controller: each worker runs as the child of tests/worker_reaper.py,
    which stops what a worker started should it be killed, and a worker that ends abruptly is not
    replaced (unless --max-worker-restart says otherwise): xdist would run the test it died in
    again, and a test that exhausted the memory once does again. The run then ends with the
    worker's tests, naming the test it died in, and the others' current test files."""
    if hasattr(config, "workerinput") or not config.pluginmanager.hasplugin("xdist"):
        return
    specs = getattr(config.option, "tx", None) or []
    if not specs or config.getoption("collectonly"):
        return
    reaper = f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'tests' / 'worker_reaper.py'))}"
    config.option.tx = [f"popen//python={reaper}" if spec == "popen" else spec for spec in specs]
    if config.option.maxworkerrestart is None:
        config.option.maxworkerrestart = "0"
    config.pluginmanager.register(_WorkerEnds(config), "signserver-worker-ends")


class _WorkerEnds:
    """Says, as soon as the controller knows, which worker ended abruptly, how, and in which test."""

    def __init__(self, config):
        self._config = config

    @pytest.hookimpl
    def pytest_testnodedown(self, node, error):
        if error is None:  # a worker that finished its tests
            return
        terminal = self._config.pluginmanager.getplugin("terminalreporter")
        if terminal is None:
            return
        running = _running_on(self._config, node)
        status = _exit_status(node)
        how = (f"killed by {signal.Signals(-status).name}" if status is not None and status < 0
               else f"ended with status {status}" if status is not None else "ended abruptly")
        where = f"while running {running}" if running else "between tests"
        then = ("the run ends once the other workers finish their current test files"
                if str(self._config.option.maxworkerrestart) == "0" else "a new worker takes its place")
        terminal.write_line(f"\nworker {node.gateway.id} {how} {where}; {then}", red=True)

    @pytest.hookimpl
    def pytest_keyboard_interrupt(self, excinfo):
        """Ctrl-C, or `make test`'s limit on a run's time: which test each worker was in."""
        terminal = self._config.pluginmanager.getplugin("terminalreporter")
        scheduler = getattr(self._config.pluginmanager.getplugin("dsession"), "sched", None)
        if terminal is None or scheduler is None:
            return
        running = [f"{node.gateway.id}: {_running_on(self._config, node) or 'between tests'}"
                   for node in scheduler.nodes]
        if running:
            terminal.write_line("\ninterrupted while running " + "; ".join(running), red=True)


def _running_on(config, node) -> str | None:
    """The first test not done of those the scheduler gave ``node`` (xdist's loadfile/loadscope
    and load schedulers), or None."""
    dsession = config.pluginmanager.getplugin("dsession")
    scheduler = getattr(dsession, "sched", None)
    assigned = getattr(scheduler, "assigned_work", {}).get(node)
    if assigned is not None:
        for unit in assigned.values():
            for nodeid, done in unit.items():
                if not done:
                    return nodeid
        return None
    pending = getattr(scheduler, "node2pending", {}).get(node)
    if pending:
        return scheduler.collection[pending[0]]
    return None


def _exit_status(node) -> int | None:
    """The worker's exit status as Popen gives it (negative: the signal), when execnet tells it."""
    popen = getattr(getattr(node.gateway, "_io", None), "popen", None)
    if popen is None:
        return None
    try:
        return popen.wait(timeout=10)  # the reaper ends once it has stopped what the worker started
    except subprocess.TimeoutExpired:
        return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # Before the item's fixtures are set up, so that those of a marked module see the flag too.
    global _on_sqlite_only_test
    _on_sqlite_only_test = item.get_closest_marker("sqlite_only") is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    # The test's fixtures are finalised: its own databases on PostgreSQL go (see PostgresCluster).
    test_folder = (getattr(item, "funcargs", None) or {}).get("tmp_path")
    if _cluster is not None and test_folder is not None:
        _cluster.drop_under(str(test_folder))


def pytest_sessionfinish(session, exitstatus):
    _stop_cluster()


def _stop_cluster() -> None:
    global _cluster
    if _cluster is not None:
        _cluster.stop()
        _cluster = None


def _run_cluster() -> PostgresCluster:
    """The run's cluster, started on first use and removed when the run ends, even a failing one."""
    global _cluster
    if _cluster is None:
        cluster = PostgresCluster()
        atexit.register(cluster.stop)  # should pytest itself stop before its session ends
        try:
            _cluster = cluster.start()
        except Exception:
            cluster.stop()
            raise
    return _cluster


def database_url(path: Path) -> str:
    """The URL of the test database that ``path`` stands for: the SQLite file at ``path`` (made
    from the run's migrated template when it does not exist yet) or, on PostgreSQL, a database of
    the run's cluster made for that path from the migrated template (the same database on every
    call with the same path). Tests marked sqlite_only get the file as it is, or none."""
    if _on_sqlite_only_test:
        return f"sqlite:///{path}"
    if not ON_POSTGRESQL:
        _copy_sqlite_template(Path(path))
        return f"sqlite:///{path}"
    return _run_cluster().url_for(str(path))


def _migrate_ra(url: str) -> None:
    from signserver.ra.store.database import RaDatabase

    database = RaDatabase(url)
    database.migrate()
    database.close()


RA_TEMPLATE = "signserver_ra_template"  # on PostgreSQL, beside the core's template
_sqlite_templates: dict[Callable[[str], None], Path] = {}  # the run's migrated SQLite databases, made on first use


def _copy_sqlite_template(path: Path, migrate: Callable[[str], None] = migrate_core) -> None:
    """Make ``path`` a copy of a SQLite database migrated once for the run (by ``migrate``: the
    core's schema, or the RA's), unless it exists: a fresh test database then costs a file copy,
    as on PostgreSQL, instead of every migration again (``prepare_database`` then finds nothing to
    do). The copy is private (0600), as the server makes its own database file."""
    if path.exists():
        return
    template = _sqlite_templates.get(migrate)
    if template is None:
        folder = Path(tempfile.mkdtemp(prefix="signserver-template-"))
        owner = os.getpid()
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, ignore_errors=True))
        template = folder / "template.db"
        migrate(f"sqlite:///{template}")
        _sqlite_templates[migrate] = template
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as copy:
        copy.write(template.read_bytes())


def ra_database_url(path: Path) -> str:
    """The URL of a test database of the RA's that ``path`` stands for, migrated: a copy of the
    RA's schema migrated once for the run (a file, or on PostgreSQL a database of the run's
    cluster), as ``database_url`` gives the core's."""
    if not ON_POSTGRESQL or _on_sqlite_only_test:
        _copy_sqlite_template(Path(path), _migrate_ra)
        return f"sqlite:///{path}"
    cluster = _run_cluster()
    return cluster.url_for(str(path), template=cluster.template(RA_TEMPLATE, _migrate_ra))


def empty_database_url(path: Path) -> str:
    """Like ``database_url``, but a new database without a single table, for the migrations' tests."""
    if not ON_POSTGRESQL or _on_sqlite_only_test:
        return f"sqlite:///{path}"
    return _run_cluster().empty_url(str(path))


@pytest.fixture(autouse=True)
def _no_log_stream_outlives_its_test():
    """A test that configures logging as a command does (signserver.monitoring.logs) points the
    root logger at the stderr pytest captures for that test alone: threads that outlive the test
    (the SMTP server's, a server's background work) would then write to a closed stream, and
    logging would print its "--- Logging error ---" traceback into the run's output."""
    root = logging.getLogger()
    before = set(root.handlers)
    yield
    for handler in list(root.handlers):
        # pytest's own handlers (its capture's subclasses) come and go with each phase of a test.
        if handler not in before and type(handler) in (logging.StreamHandler, CountingHandler):
            root.removeHandler(handler)


@pytest.fixture(scope="session", autouse=True)
def test_store():
    """The store of this run; on PostgreSQL, its cluster is started before the first test."""
    if ON_POSTGRESQL:
        _run_cluster()
    yield TEST_STORE
    _stop_cluster()


def token_environ(state_dir: Path) -> dict[str, str]:
    """The settings that point signserver at the test token beyond its state directory: the
    module, for openCryptoki (SoftHSM's is the default)."""
    if not ON_OPENCRYPTOKI:
        return {}
    with (state_dir / "signserver.toml").open("rb") as handle:
        return {"SIGNSERVER_HSM_MODULE": tomllib.load(handle)["hsm"]["module"]}


def requires_softhsm(what: str):
    """Skips a test on openCryptoki's soft token because it needs ``what`` from SoftHSM."""
    return pytest.mark.skipif(ON_OPENCRYPTOKI, reason=f"openCryptoki's soft token: {what}")


@pytest.fixture(scope="session")
def font_cache(tmp_path_factory) -> Path:
    """One folder for the stamp font's face and the subsets cut from it, for every state directory of
    the run (and every pytest-xdist process of it, and under `make test` every run of it:
    SIGNSERVER_TEST_FONT_CACHE): each would otherwise extract the same 16 MB face and cut the same
    subsets again (signserver/pades/font.py writes both atomically, so several processes may share
    the folder)."""
    if os.environ.get("SIGNSERVER_TEST_FONT_CACHE"):
        folder = Path(os.environ["SIGNSERVER_TEST_FONT_CACHE"])
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.getbasetemp().parent / "stamp-fonts"  # the run's folder, above the workers'
    else:
        folder = tmp_path_factory.getbasetemp() / "stamp-fonts"
    folder.mkdir(exist_ok=True)
    return folder


def share_stamp_fonts(state: Path, font_cache: Path) -> None:
    """Let the state directory ``state`` use the run's font cache as its ``fonts`` folder, unless
    it has one already. Tests whose subject is the extraction itself use a state directory
    without it."""
    state.mkdir(parents=True, exist_ok=True)
    fonts = state / "fonts"
    if not fonts.exists() and not fonts.is_symlink():
        fonts.symlink_to(font_cache, target_is_directory=True)


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory, font_cache) -> Path:
    """A state directory with a fresh SoftHSM token labelled 'signserver', for the whole run; its
    stamp fonts are the run's (font_cache).

    SOFTHSM2_CONF is set for this process before any test loads the module, so every test
    sees the tokens of this directory and none of the system's.
    """
    state = tmp_path_factory.mktemp("state")
    share_stamp_fonts(state, font_cache)
    env = {**os.environ, "SIGNSERVER": str(SIGNSERVER)}
    for name in ("SIGNSERVER_HSM_USER_PIN", "SIGNSERVER_HSM_SO_PIN", "SIGNSERVER_CONFIG"):
        env.pop(name, None)
    if ON_OPENCRYPTOKI:
        # One soft token per system: opencryptoki-setup erases and initialises it for this run.
        setup = subprocess.run([str(ROOT / "opencryptoki-setup" / "opencryptoki-setup"), str(state)], env=env,
                               capture_output=True, text=True)
        if setup.returncode != 0:
            pytest.exit(f"openCryptoki's soft token could not be prepared: {setup.stderr.strip()}", returncode=1)
        return state
    subprocess.run([str(ROOT / "softhsm-setup" / "softhsm-setup"), str(state)], env=env, check=True,
                   capture_output=True)
    os.environ["SOFTHSM2_CONF"] = str(state / "softhsm" / "softhsm2.conf")
    return state


@pytest.fixture(scope="session")
def config(state_dir: Path) -> Config:
    return load_config(environ={**TEST_COSTS, "SIGNSERVER_STATE_DIR": str(state_dir), **token_environ(state_dir),
                                **_session_database(state_dir)})


def _default_costs() -> dict[str, dict[str, object]]:
    """TEST_COST_SETTINGS' keys at the defaults' values, by section."""
    defaults = load_config(path=Path(os.devnull), environ={"SIGNSERVER_STATE_DIR": tempfile.gettempdir()})
    sections: dict[str, dict[str, object]] = {}
    for key in TEST_COST_SETTINGS:
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = getattr(getattr(defaults, section), name)
    return sections


def production_costs(config: Config) -> Config:
    """``config`` with the costs of the defaults instead of TEST_COSTS: for the tests whose subject
    is one of those costs."""
    return replace(config, **{section: replace(getattr(config, section), **values)
                              for section, values in _default_costs().items()})


def production_environ() -> dict[str, str]:
    """The environment's side of production_costs, for a server or command a test starts (as
    cli_env's extras)."""
    return {env_name(f"{section}.{name}"): str(value)
            for section, values in _default_costs().items()
            for name, value in values.items()}


def _session_database(state_dir: Path) -> dict[str, str]:
    """The session database's setting: none on SQLite (the state directory's file, as a server's)."""
    if not ON_POSTGRESQL:
        return {}
    return {"SIGNSERVER_DATABASE_URL": _run_cluster().url_for(str(state_dir / "signserver.db"))}


@pytest.fixture(scope="session")
def service(config: Config) -> SignService:
    service = SignService.from_config(config, user_pin=config.hsm.user_pin(environ={}))
    service.prepare_database()
    return service


# The run's token keeps the CA keys a test module makes only as long as the module runs: each CA
# set-up adds four key pairs to the one token of the test process, and SoftHSM walks every object
# of a token for every search and reads them all whenever a process opens it (each command and
# server the tests start), so that a token left to grow to hundreds of CA keys cost every later
# test its share (a search 14 ms at 730 objects against 1.6 ms at 70). Kept, by key id: the keys
# there when the module began (None while no module keeps count: openCryptoki's run), those of
# broader fixtures set up meanwhile, and those of the set-ups service_with_ca keeps for copying.
_kept_ca_keys: set[str] | None = None
_token_keeper: SignService | None = None


def _ca_key_ids(service: SignService) -> set[str]:
    """The ids of the CA's keys on the run's token (their labels begin with "ca-"). Read with one
    attribute call per key, where HsmKeyStore.list describes each key in four (kind, size, flags):
    this runs at every module's start and end and every wider fixture's set-up."""
    from pkcs11 import Attribute, ObjectClass

    session = service.keys.session

    def read(s) -> set[str]:
        found = (o.get_attributes([Attribute.ID, Attribute.LABEL])
                 for o in session.find(s, {Attribute.CLASS: ObjectClass.PRIVATE_KEY}))
        return {bytes(a.get(Attribute.ID) or b"").hex() for a in found
                if (a.get(Attribute.LABEL) or "").startswith("ca-")}

    return session.run(read, "list the CA's keys")


@pytest.fixture(scope="session")
def _run_token_keys(state_dir: Path) -> SignService:
    """A service on the run's token for the fixtures' own use (modules may name theirs ``config``
    and ``service``); it never opens its database."""
    own = load_config(environ={**TEST_COSTS, "SIGNSERVER_STATE_DIR": str(state_dir), **token_environ(state_dir)})
    return SignService.from_config(own, user_pin=own.hsm.user_pin(environ={}))


@pytest.fixture(scope="module", autouse=True)
def _ca_keys_end_with_their_module(request):
    """Removes from the run's token the CA keys made while the module ran, but for those kept (see
    _kept_ca_keys): the CAs of the module's databases go with the module."""
    global _kept_ca_keys, _token_keeper
    if ON_OPENCRYPTOKI:
        yield
        return
    _token_keeper = request.getfixturevalue("_run_token_keys")
    _kept_ca_keys = _ca_key_ids(_token_keeper)
    yield
    kept = _kept_ca_keys.union(*(set_up[2] for set_up in _set_up_cas.values()))
    _kept_ca_keys = None
    for key_id in _ca_key_ids(_token_keeper) - kept:
        _token_keeper.keys.delete(key_id)


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    yield
    # A fixture that outlives the module may keep a CA of its own: its keys stay.
    if _kept_ca_keys is not None and fixturedef.scope in ("package", "session"):
        _kept_ca_keys.update(_ca_key_ids(_token_keeper))


@pytest.fixture(scope="session")
def capabilities(service: SignService) -> TokenCapabilities:
    """What the test token offers (its mechanism list)."""
    return service.keys.session.capabilities()


@pytest.fixture(scope="session")
def token_key_algorithm(capabilities: TokenCapabilities) -> KeyAlgorithm:
    """A key algorithm the test token can use: EC P-256 where offered, else RSA-2048."""
    return capabilities.best_key_algorithm([KeyAlgorithm.EC_P256, KeyAlgorithm.RSA_2048], "the tests' keys")


def require_key_algorithm(capabilities: TokenCapabilities, algorithm: KeyAlgorithm) -> None:
    """Skips the calling test, naming the missing mechanisms, when the token cannot use ``algorithm``."""
    if not capabilities.can_use(algorithm):
        missing = [m.name for m in key_algorithm_mechanisms(algorithm) if not capabilities.offers(m)]
        pytest.skip(f"the token lacks {' + '.join(missing)} for {algorithm.value}")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.datetime(2026, 11, 21, 2, 26, 6, tzinfo=datetime.timezone.utc))


def service_with(config: Config, database: Path | str, clock, **changes) -> SignService:
    """A service on the test token with its own database and clock; ``changes`` replace
    configuration sections (e.g. ``smtp=SmtpConfig(...)``). ``database`` is a path that stands
    for a test database (see ``database_url``), or the URL of another service's database."""
    url = database if isinstance(database, str) else database_url(database)
    config = replace(config, database_url=url, **changes)
    service = SignService.from_config(config, user_pin=config.hsm.user_pin(environ={}), clock=clock)
    service.prepare_database()
    return service


# Set-up CAs made in this process, to copy: (the CA's configuration, its operator, the store) ->
# (the clock's time at the set-up, the database's path, its keys' ids on the token).
_set_up_cas: dict[tuple, tuple[datetime.datetime, Path, frozenset[str]]] = {}
CA_COPY_WINDOW = datetime.timedelta(minutes=15)


def service_with_ca(config: Config, database: Path, clock, operator: str = "operator:test") -> SignService:
    """``service_with`` on a new database at ``database`` whose CA is initialised by ``operator``.

    The first such database of a test process for a CA configuration is set up for real: its root,
    issuing, OCSP and TSA keys generated on the token (RSA-3072 by default: a second or more of
    CPU each) and its certificates and first CRLs made. Later ones are copies of that database, the
    same CA on the same token keys, as a restored backup of the CA would be, as long as the clock
    reads the same time as at that set-up or up to CA_COPY_WINDOW after it: the copy then holds
    what a set-up at that time would have made. Tests of the set-up itself call ``initialise``."""
    database = Path(database)
    if database.exists():
        raise FileExistsError(f"{database}: service_with_ca makes a new database")
    key = (repr(config.ca), operator, ON_POSTGRESQL and not _on_sqlite_only_test)
    now = clock.now() if clock is not None else datetime.datetime.now(datetime.timezone.utc)
    made = _set_up_cas.get(key)
    if made is None or not made[0] <= now <= made[0] + CA_COPY_WINDOW:
        folder = Path(tempfile.mkdtemp(prefix="signserver-ca-"))
        owner = os.getpid()
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, ignore_errors=True))
        original = service_with(config, folder / "ca.db", clock)
        before = _ca_key_ids(original)
        original.ca.initialise(operator=operator)
        original.database.engine.dispose()  # closed: PostgreSQL copies only a database nobody is connected to
        if made is not None and _kept_ca_keys is not None:  # replaced: its keys go with the module running now
            _kept_ca_keys.difference_update(made[2])
        made = _set_up_cas[key] = (now, folder / "ca.db", frozenset(_ca_key_ids(original) - before))
    if key[2]:
        return service_with(config, _run_cluster().copy_url(str(database), str(made[1])), clock)
    database.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # private, as the server makes it
    # SQLite's backup, not a file copy: what the set-up wrote may still be in the write-ahead log.
    with contextlib.closing(sqlite3.connect(made[1])) as original, contextlib.closing(sqlite3.connect(database)) as copy:
        original.backup(copy)
    return service_with(config, database, clock)


@pytest.fixture
def fresh_service(config, tmp_path, clock) -> SignService:
    """A service with an empty database of its own and a clock the test moves."""
    return service_with(config, tmp_path / "signserver.db", clock)


PASSWORD = "Macau-2017-sign"


def seed_of(otp_uri: str) -> str:
    return parse_qs(urlparse(otp_uri).query)["secret"][0]


def enrol(service: SignService, username: str | None = None, password: str = PASSWORD,
          key_algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256, **fields) -> tuple[NewAccount, str]:
    """Create an account; returns it and its OTP seed."""
    username = username or f"user{uuid.uuid4().hex[:8]}"
    enrolment = Enrolment(username=username, holder_name=fields.pop("holder_name", "Weng Sam LUZIA KUAN"),
                          emails=fields.pop("emails", (f"{username}@example.mo",)),
                          key_algorithm=key_algorithm, **fields)
    created = service.accounts.create(enrolment, Secret(password), operator="operator:test")
    return created, seed_of(created.otp_uri)


@pytest.fixture(scope="session")
def keystore(service: SignService):
    return service.keys


@pytest.fixture
def label() -> str:
    """A key label no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def damaged_key():
    """``damaged_key(keys, label)`` puts on the token of ``keys`` (an HsmKeyStore) a key pair whose
    curve and point are empty, as a key generation cut short by a crash leaves its objects (or
    another application a bad one), and returns its key id; the objects are destroyed after the
    test. Skips the test on a token that refuses to make such objects."""
    from pkcs11 import Attribute, KeyType, ObjectClass

    from signserver.errors import SignServerError

    made = []

    def make(keys, label: str) -> str:
        key_id = uuid.uuid4().bytes
        common = {Attribute.KEY_TYPE: KeyType.EC, Attribute.TOKEN: True, Attribute.ID: key_id,
                  Attribute.LABEL: label, Attribute.EC_PARAMS: b""}
        try:
            keys.session.run(lambda s: s.create_object(
                {**common, Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.PRIVATE: True,
                 Attribute.SENSITIVE: True, Attribute.SIGN: True, Attribute.VALUE: b"\x01"}),
                "make a damaged private key")
            made.append((keys, key_id))
            keys.session.run(lambda s: s.create_object(
                {**common, Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.PRIVATE: False,
                 Attribute.VERIFY: True, Attribute.EC_POINT: b""}), "make a damaged public key")
        except SignServerError as exc:  # the token's refusal, as TokenSession.run translates it
            pytest.skip(f"the token refuses a key with an empty curve: {exc}")
        return key_id.hex()

    yield make
    for keys, key_id in made:
        keys.session.run(lambda s: [o.destroy() for o in s.get_objects({Attribute.ID: key_id})],
                                 "destroy a damaged key")


def cli_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for running the `signserver` command against the test token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER_")}
    env.update(TEST_COSTS)
    env.update(SIGNSERVER_STATE_DIR=str(state_dir),
               SOFTHSM2_CONF=str(state_dir / "softhsm" / "softhsm2.conf"), **token_environ(state_dir))
    if ON_POSTGRESQL and not _on_sqlite_only_test:
        # The state directory's database, as a server there would have it by default.
        env["SIGNSERVER_DATABASE_URL"] = database_url(state_dir / "signserver.db")
    env.update(extra)
    return env


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def free_port() -> int:
    """A TCP port free on the loopback interface now (for a server a test starts; see
    :func:`on_a_free_port` for one it binds later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PORT_ATTEMPTS = 5


def on_a_free_port(start: Callable[[int], T]) -> T:
    """``start(port)`` on a port :func:`free_port` chose, and on another while it fails because that
    port was taken: it was free when free_port looked, but a connection made since, by another test
    process, may have been given it. A taken port shows as an OSError (EADDRINUSE) or as an
    AssertionError that says "address already in use" (a server process that stopped at once, its
    output in the message); any other failure is raised at once, and the last attempt's whatever it is.
    """
    for _ in range(PORT_ATTEMPTS - 1):
        try:
            return start(free_port())
        except OSError as refused:
            if refused.errno != errno.EADDRINUSE:
                raise
        except AssertionError as refused:
            if "address already in use" not in str(refused).lower():
                raise
    return start(free_port())


def smtp_on_loopback(handler) -> Controller:
    """A real SMTP server (aiosmtpd) on a free loopback port, started, its messages to ``handler``;
    the caller stops it. Its port: ``.port``."""
    def started(port: int) -> Controller:
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        return controller
    return on_a_free_port(started)


class Inbox:
    """An aiosmtpd handler that keeps what it receives."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"
