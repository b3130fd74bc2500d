"""The Prometheus meter, in prometheus_client's multiprocess mode, and the app that serves a node.

Every worker of a node writes its figures to files in one directory (``PROMETHEUS_MULTIPROC_DIR``,
which the supervisor empties and sets before it starts a worker: prometheus_client chooses its
storage when it is first imported); one scrape of the supervisor's ``[metrics] listen`` reads them
all, so the figures are the node's, whichever worker served what. Gauges are summed over the live
workers, except those only the background work reports (CRL age, outbox backlog): the newest
report is served, and only while it is recent (:class:`NodeFigures`); a certificate's end is the
latest reading of any worker, the background lease the largest. A worker that is creating
its files as the scrape reads them is left out of that scrape, rather than failing it.

prometheus_client's process figures (``process_resident_memory_bytes``, ``process_open_fds``, ...)
describe the process that answers the scrape, and its multiprocess mode has none: here each worker
says it is live (the gauge ``signserver_worker``, one per live pid), and the scrape reads each live
worker's figures from /proc with prometheus_client's own ProcessCollector, labelled with the
worker's index and pid (:class:`WorkerProcesses`).
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import os
import socket
import time
from pathlib import Path

from signserver.addresses import split_address
from signserver.errors import ConfigurationError
from signserver.monitoring.meter import Meter

log = logging.getLogger(__name__)

MULTIPROCESS_DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PATH = "/metrics"  # the one path the metrics endpoint answers

# Latencies of a call: from a single signature (1 to 10 ms) to a large document. Finer from 50 ms
# to a second, where an Authorize (25 to 150 ms: argon2, then the HSM) and a SignPdf (70 to 500 ms)
# answer: an Authorize past 150 ms, or a SignPdf past 500 ms, falls in a bucket of its own. Every
# earlier bound is kept, for the queries that name one.
CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.75,
                1.0, 2.5, 5.0, 10.0, 30.0)
# Waits and holds of the PKCS#11 lock: one signature holds it about 0.6 ms (RSA-2048), a key
# generation seconds.
LOCK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0)
# The background work reports its figures every round (CRL age) or every 10 s (outbox backlog)
# while it holds the 15-s background lease. One older than this comes from a process that lost the
# lease (another node works now) or whose work is stuck: served, it would read as current forever.
BACKGROUND_FIGURES_STALE_SECONDS = 60.0
# Background figures that are ages: each is served as its age at the scrape, not at its report.
AGES = frozenset({"signserver_crl_age_seconds"})
# The header of a figures file (its used length, then padding): a file shorter than this is one
# prometheus_client has created and not yet sized, as a worker starts.
_FILE_HEADER_BYTES = 8
_BACKGROUND_FILES = "gauge_livemostrecent_"


def prepare_multiprocess_directory(directory: Path) -> None:
    """Empty ``directory`` (figures of an earlier run would add up with this one's) and point this
    process and the workers it forks at it. Call before anything imports prometheus_client."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROCESS_DIRECTORY_VARIABLE] = str(directory)


_worker_exits = None  # the supervisor's counter, made at the first exit (after the workers are forked)


def count_worker_exit(worker: int | str) -> None:
    """The supervisor saw a worker (its index) or the metrics process ("metrics") exit: counted
    under ``signserver_worker_exits_total``, which the supervisor reports from its own process."""
    global _worker_exits
    from prometheus_client import Counter

    if _worker_exits is None:
        _worker_exits = Counter("signserver_worker_exits", "Worker processes that exited and were started again, "
                                "by worker index (or metrics)", ("worker",))
    _worker_exits.labels(str(worker)).inc()


def forget_worker(pid: int) -> None:
    """A worker ended: its live gauges no longer count (its counters stay, as Prometheus expects)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def metrics_socket(address: str) -> socket.socket:
    """The metrics endpoint's listening socket, bound by the supervisor (so that the address is
    known, and kept, when the metrics process is started again).

    Raises: ConfigurationError: the address is malformed or cannot be bound.
    """
    try:
        host, port = split_address(address)
    except ValueError as exc:
        raise ConfigurationError("metrics.listen", str(exc)) from None
    # IPPROTO_TCP named, as in http.asgi_server.listening_socket: asyncio sets TCP_NODELAY only on
    # connections whose socket says so, and a scrape's answer would otherwise wait for the
    # scraper's delayed ACK.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise ConfigurationError("metrics.listen", f"cannot bind {address}: {exc.strerror or exc}") from None
    return sock


def serve_metrics(sock: socket.socket, stale_after: float = BACKGROUND_FIGURES_STALE_SECONDS) -> None:
    """Answer scrapes on ``sock`` until SIGTERM (run in a process of its own); background figures
    older than ``stale_after`` seconds are left out (see :class:`NodeFigures`)."""
    import uvicorn

    config = uvicorn.Config(metrics_app(stale_after), lifespan="off", log_config=None, access_log=False,
                            server_header=False, timeout_keep_alive=30, limit_concurrency=64)
    uvicorn.Server(config).run(sockets=[sock])


def metrics_app(stale_after: float = BACKGROUND_FIGURES_STALE_SECONDS):
    """The ASGI app answering a scrape with the figures of every worker of this node."""
    from prometheus_client import CollectorRegistry, make_asgi_app

    directory = os.environ[MULTIPROCESS_DIRECTORY_VARIABLE]
    registry = CollectorRegistry()
    registry.register(NodeFigures(directory, stale_after))
    registry.register(WorkerProcesses(directory))
    return only_scrapes(make_asgi_app(registry))


def _sized_files(pattern: str) -> list[str]:
    """The figures files matching ``pattern`` that their worker has finished creating."""
    sized = []
    for path in glob.glob(pattern):
        try:
            if os.path.getsize(path) >= _FILE_HEADER_BYTES:
                sized.append(path)
        except OSError:  # gone since the glob: a live gauge's file of a worker that ended
            pass
    return sized


class NodeFigures:
    """A collector of every worker's figures in ``directory``: prometheus_client's multiprocess
    merge (counters and histograms summed over every worker that ever ran since the start, live
    gauges over the live ones), except for the background figures (the ``livemostrecent`` gauges).

    Only the process holding the background lease reports those, and it stays a live worker when
    the lease goes to another node: its last report would be served for ever, as current. So the
    newest report of each is served only when it is at most ``stale_after`` seconds old, and an age
    (AGES) is advanced to the scrape. A file a worker has not finished creating is skipped (read,
    it would fail the whole scrape)."""

    def __init__(self, directory: str | Path, stale_after: float = BACKGROUND_FIGURES_STALE_SECONDS):
        self._directory = str(directory)
        self._stale_after = stale_after

    def collect(self):
        from prometheus_client.multiprocess import MultiProcessCollector

        files = _sized_files(os.path.join(self._directory, "*.db"))
        background = {path for path in files if os.path.basename(path).startswith(_BACKGROUND_FILES)}
        yield from MultiProcessCollector.merge([path for path in files if path not in background])
        yield from self._background(sorted(background), time.time())

    def _background(self, files: list[str], now: float):
        from prometheus_client.metrics_core import GaugeMetricFamily
        from prometheus_client.mmap_dict import MmapedDict

        newest: dict[tuple[str, tuple], tuple[float, float]] = {}  # (name, labels) -> (reported, value)
        helps: dict[str, str] = {}
        for path in files:
            try:
                values = list(MmapedDict.read_all_values_from_file(path))
            except FileNotFoundError:  # its worker ended since the glob
                continue
            for key, value, reported, _position in values:
                name, _sample, labels, help_text = json.loads(key)
                if now - reported > self._stale_after:
                    continue  # 0 for a figure created and never reported
                helps[name] = help_text
                found = (name, tuple(sorted(labels.items())))
                if found not in newest or newest[found][0] < reported:
                    newest[found] = (reported, value + (now - reported if name in AGES else 0.0))
        families: dict[str, GaugeMetricFamily] = {}
        for (name, labels), (_reported, value) in sorted(newest.items()):
            family = families.setdefault(name, GaugeMetricFamily(name, helps[name], labels=[k for k, _ in labels]))
            family.add_metric([v for _, v in labels], value)
        return list(families.values())


def only_scrapes(app):
    """``app`` (prometheus_client's, which answers any path and method with the figures) for GET
    and HEAD of METRICS_PATH only: 404 for another path (a probe of / or of /favicon.ico is not a
    scrape), 405 for another method."""
    async def scrapes(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        if scope["path"] != METRICS_PATH:
            status, headers, body = 404, [], b"not found: the metrics are at /metrics\n"
        elif scope["method"] not in ("GET", "HEAD"):
            status, headers, body = 405, [(b"allow", b"GET, HEAD")], b"method not allowed: GET /metrics\n"
        else:
            return await app(scope, receive, send)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), *headers]})
        await send({"type": "http.response.body", "body": body})
    return scrapes


class WorkerProcesses:
    """A collector, in the process that answers scrapes, of every live worker's process figures:
    prometheus_client's ``process_*`` metrics (resident and virtual memory, CPU seconds, open and
    most descriptors, start time) read from /proc at the scrape, with the labels ``worker`` and
    ``pid``. The live workers are those whose ``signserver_worker`` gauge is in ``directory`` (a
    worker that ended is forgotten by :func:`forget_worker`); one that ended since is left out."""

    def __init__(self, directory: str | Path):
        self._pattern = os.path.join(str(directory), "gauge_liveall_*.db")

    def collect(self):
        from prometheus_client import ProcessCollector
        from prometheus_client.metrics_core import Metric
        from prometheus_client.multiprocess import MultiProcessCollector

        live = MultiProcessCollector.merge(_sized_files(self._pattern), accumulate=False)
        workers = sorted({(sample.labels["pid"], sample.labels.get("worker", ""))
                          for metric in live if metric.name == WORKER_GAUGE for sample in metric.samples
                          if sample.labels.get("pid", "").isdigit()}, key=lambda found: int(found[0]))
        families: dict[str, Metric] = {}
        for pid, worker in workers:
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "worker": worker, "pid": pid}, sample.value)
        return list(families.values())


def _never_raising(report):
    """A report that fails is logged (once per kind), never raised into the call it reports on."""
    failed = False

    @functools.wraps(report)
    def guarded(*args, **kwargs) -> None:
        nonlocal failed
        try:
            report(*args, **kwargs)
        except Exception:
            if not failed:
                failed = True
                log.exception("metrics: %s failed; its figures may be short", report.__name__)
    return guarded


WORKER_GAUGE = "signserver_worker"


class PrometheusMeter(Meter):
    """Reports into prometheus_client's metrics (names under ``signserver_``). ``worker``: the
    index of the worker process it reports for (its figures from /proc carry it)."""

    def __init__(self, worker: int | str = ""):
        from prometheus_client import Counter, Gauge, Histogram

        # Says this process is a live worker, for WorkerProcesses; "liveall" adds its pid.
        Gauge(WORKER_GAUGE, "A live worker process of this node (1), by index and pid", ("worker",),
              multiprocess_mode="liveall").labels(str(worker)).set(1)

        self._calls = Counter("signserver_calls", "Calls answered, by front, method and status",
                              ("front", "method", "status"))
        # Apart from the calls: a label more there would split every series of the calls answered.
        self._refusals = Counter("signserver_refusals",
                                 "Calls refused, by front, method and the stable reason their answer carries",
                                 ("front", "method", "reason"))
        self._call_seconds = Histogram("signserver_call_seconds", "Time to answer a call",
                                       ("front", "method"), buckets=CALL_BUCKETS)
        self._lock_wait = Histogram("signserver_hsm_lock_wait_seconds",
                                    "Time waited for the process's PKCS#11 lock", buckets=LOCK_BUCKETS)
        self._lock_hold = Histogram("signserver_hsm_lock_hold_seconds",
                                    "Time the PKCS#11 lock was held per HSM operation", buckets=LOCK_BUCKETS)
        self._pending = Gauge("signserver_blocking_calls_pending",
                              "Calls running or queued in a worker pool (accounts: argon2 password checks)",
                              ("pool",), multiprocess_mode="livesum")
        self._threads = Gauge("signserver_blocking_calls_threads", "Threads of a worker pool", ("pool",),
                              multiprocess_mode="livesum")
        self._tokens = Counter("signserver_activation_tokens", "Activation tokens issued, spent, or expired unspent",
                               ("event",))
        self._lockouts = Counter("signserver_lockouts", "Names locked after too many wrong attempts")
        self._reopenings = Counter("signserver_hsm_session_reopenings", "HSM sessions opened again: lost, or a key handle kept went stale")
        self._crl_age = Gauge("signserver_crl_age_seconds", "Age of the newest CRL of an issuer", ("issuer",),
                              multiprocess_mode="livemostrecent")
        self._outbox = Gauge("signserver_outbox_backlog", "E-mails waiting in the outbox",
                             multiprocess_mode="livemostrecent")
        # mostrecent: the latest reading of any worker, which reads the certificates as they are
        # now, even when a certificate was replaced by one that ends sooner (the largest would hide
        # it behind the end a worker started earlier read); a worker that ended leaves its reading,
        # true when it was made, until a newer one.
        self._expiries = Gauge("signserver_certificate_expiry_timestamp_seconds",
                               "When a certificate the node serves with ends (seconds since the epoch)",
                               ("certificate",), multiprocess_mode="mostrecent")
        # livemax: 1 on the node whose worker holds the lease, 0 on the others; a worker that dies
        # holding it leaves the figure with it (its lease runs out: another node takes the work).
        self._lease = Gauge("signserver_background_lease_held",
                            "1 while a worker of this node holds the lease of the background work",
                            multiprocess_mode="livemax")
        self._logged = Counter("signserver_log_messages", "Lines logged at warning level or above, by level and logger",
                               ("level", "logger"))
        self._known_pools: set[str] = set()

    @_never_raising
    def call_finished(self, front: str, method: str, status: str, seconds: float, reason: str | None = None) -> None:
        self._calls.labels(front, method, status).inc()
        if reason is not None:
            self._refusals.labels(front, method, reason).inc()
        self._call_seconds.labels(front, method).observe(seconds)

    @_never_raising
    def refused_later(self, front: str, method: str, reason: str) -> None:
        self._refusals.labels(front, method, reason).inc()

    @_never_raising
    def hsm_lock_released(self, waited: float, held: float) -> None:
        self._lock_wait.observe(waited)
        self._lock_hold.observe(held)

    @_never_raising
    def blocking_calls_pending(self, pool: str, pending: int, threads: int) -> None:
        self._pending.labels(pool).set(pending)
        if pool not in self._known_pools:
            self._known_pools.add(pool)
            self._threads.labels(pool).set(threads)

    @_never_raising
    def activation_tokens(self, event: str, count: int = 1) -> None:
        self._tokens.labels(event).inc(count)

    @_never_raising
    def account_locked(self) -> None:
        self._lockouts.inc()

    @_never_raising
    def hsm_session_reopened(self) -> None:
        self._reopenings.inc()

    @_never_raising
    def crl_age(self, issuer: str, seconds: float) -> None:
        self._crl_age.labels(issuer).set(seconds)

    @_never_raising
    def outbox_backlog(self, messages: int) -> None:
        self._outbox.set(messages)

    @_never_raising
    def message_logged(self, level: str, logger: str) -> None:
        self._logged.labels(level, logger).inc()

    @_never_raising
    def background_lease(self, held: bool) -> None:
        self._lease.set(1 if held else 0)

    @_never_raising
    def certificate_expiry(self, certificate: str, not_after: float) -> None:
        self._expiries.labels(certificate).set(not_after)
