"""`signserver serve`: bootstrap once, then N worker processes sharing the port.

PKCS#11 through python-pkcs11 serialises every call in a process, so throughput scales with
processes. The supervisor logs in to the token once, before any child, so that a wrong PIN is
tried once and not by every worker (tokens lock the PIN after a few wrong tries), then releases
the module; it never touches gRPC itself. The first-start bootstrap runs in a short-lived child,
then each worker is forked before it initialises PKCS#11 or creates its gRPC server. Workers bind the same port (SO_REUSEPORT, gRPC's default on Linux); one of them also runs
the background work (e-mail, audit seals, CRLs, expiry notices). A worker that dies is started
again; SIGTERM, SIGINT or SIGHUP makes every worker drain its calls in flight and stop; a second
SIGINT (Ctrl-C again) while they drain stops them at once. Every child ends with the supervisor
(:mod:`signserver.grpc_api.parent_death`): one killed (SIGKILL, the OOM killer) leaves no worker
behind serving the port. Each worker's memory is bounded
(``server.worker_memory_mb``, see :func:`worker_memory_bound`): a request that would take more is
refused, and one client cannot take the node's memory from the other workers and the database.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from contextlib import ExitStack
from dataclasses import replace

from signserver.allocator import return_large_blocks_promptly
from signserver.addresses import join_address, split_address
from signserver.config import Config
from signserver.cpu_scheduling import schedule_as_batch_work
from signserver.descriptors import raise_open_file_limit
from signserver.errors import ConfigurationError
from signserver.grpc_api.parent_death import end_with_parent
from signserver.grpc_api.state_dirs import check_writable_dirs
from signserver.grpc_api.worker_memory import apply_bound, worker_memory_bound
from signserver.monitoring.logs import set_worker
from signserver.monitoring.meter import install_meter
from signserver.monitoring.prometheus import (PrometheusMeter, count_worker_exit, forget_worker, metrics_socket,
                                              prepare_multiprocess_directory, serve_metrics)

log = logging.getLogger(__name__)

_fork = multiprocessing.get_context("fork")
STOP_GRACE_SECONDS = 20
STOP_POLL_SECONDS = 0.1  # a join is not interrupted by a signal: the stop looks for a second one this often
RESTART_PAUSE_SECONDS = 1.0  # before a process that died is started again
MAX_RESTART_PAUSE_SECONDS = 60.0  # the pause doubles for each death soon after a start, up to this
STEADY_SECONDS = 60.0  # a process that ran this long before it died starts the count afresh
LISTENER_PROBE_SECONDS = 2.0  # an address of this machine answers at once, or refuses
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _bootstrap(config: Config, demo: bool, supervisor: int) -> None:
    end_with_parent(supervisor)
    from signserver.grpc_api.server import bootstrap
    from signserver.service import SignService

    service = SignService.from_config(config)
    service.prepare_database()
    bootstrap(config, service)
    service.pades.font()  # extracted once here, not raced for by the workers
    if demo:
        from signserver.demo import ensure_demo

        ensure_demo(service, config.state_dir)


def _check_pin(config: Config) -> None:
    """Log in once here, then release the module: the children initialise their own.

    Raises: ConfigurationError (no PIN), HsmLoginFailed, HsmPinLocked, TokenNotFound, HsmUnavailable.
    """
    from signserver.hsm.module import use_softhsm_config
    from signserver.hsm.pin_guard import PinGuard
    from signserver.hsm.session import TokenSession

    use_softhsm_config(config.hsm.softhsm2_conf)
    TokenSession(config.hsm.module, config.hsm.token_label, config.hsm.user_pin(),
                 PinGuard.for_config(config.hsm, config.state_dir)).check_login()


def _work(config: Config, index: int, metrics: socket.socket | None, memory_bound: int | None,
          supervisor: int) -> None:
    from signserver.grpc_api.server import Worker

    _take_signals(supervisor)
    return_large_blocks_promptly()  # before any thread starts
    if config.server.batch_scheduling:
        schedule_as_batch_work()  # before any thread starts: they take it from this one
    set_worker(index)
    apply_bound(index, memory_bound, config.server.worker_memory_mb)  # before the HSM's and gRPC's threads
    if metrics is not None:
        metrics.close()  # the metrics process's; a worker must not keep the port when the node stops
        install_meter(PrometheusMeter(worker=index))
    Worker(config, index, background=index == 0).run()


def _serve_metrics(metrics: socket.socket, supervisor: int) -> None:
    _take_signals(supervisor)  # SIGTERM until uvicorn takes it, as in a worker
    set_worker("metrics")
    serve_metrics(metrics)


def _take_signals(supervisor: int) -> None:
    """A child's signals, first thing after its fork: SIGHUP ignored, and SIGINT until the child's
    own loop takes it (the supervisor decides; a terminal's hang-up or Ctrl-C reaches the whole
    process group); SIGTERM stops the child, and comes too when the supervisor dies. Exits
    (SystemExit) if the supervisor ``supervisor`` (its pid) is gone already."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Not the supervisor's own handler, inherited with the fork: it would swallow a SIGTERM that
    # comes before the worker's loop takes the signal over (a worker stopped as it starts). The
    # supervisor forks with SIGTERM blocked, so one sent before this line waits for it, as does
    # one the kernel sends for the supervisor's death from here on.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    end_with_parent(supervisor)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _reserve(address: str, setting: str, held: ExitStack) -> str:
    """Hold ``address`` for the workers until ``held`` closes: a socket bound to it with
    SO_REUSEPORT, as they bind it. With port 0, a free port is chosen here, so that every worker
    binds the same one. Returns the address with its port.

    SO_REUSEPORT lets a process of the same user bind a port another one listens on, and the kernel
    then shares the new connections between them: a second server started on a port in use would
    serve part of the first one's calls, from another database, and nobody would be told. So a
    port where something already answers is refused.

    Raises: ConfigurationError (naming ``setting``): the address is malformed, something already
    listens there, or it cannot be bound.
    """
    try:
        host, port = split_address(address)
    except ValueError as exc:
        raise ConfigurationError(setting, str(exc)) from None
    if port != 0 and _answers(host, port):
        raise ConfigurationError(setting, f"cannot serve on {address}: address already in use, another process "
                                          "already listens there (another server? each needs ports of its own)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the workers: past connections' TIME_WAIT
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((host, port))
    except OSError as exc:
        holder.close()
        raise ConfigurationError(setting, f"cannot bind {address}: {exc.strerror or exc}") from None
    held.enter_context(holder)
    port = holder.getsockname()[1]
    return join_address(host, port)


def _answers(host: str, port: int) -> bool:
    """Whether a process accepts connections on ``host:port`` now (a wildcard address is asked on
    loopback)."""
    asked = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        with socket.create_connection((asked, port), timeout=LISTENER_PROBE_SECONDS):
            return True
    except OSError:  # refused (nothing listens), or unreachable: the bind below says the rest
        return False


def serve(config: Config, demo: bool = False, workers: int | None = None) -> None:
    """Bootstrap, then run ``workers`` processes (default: one per CPU) until SIGTERM, SIGINT or
    SIGHUP.

    Raises:
        ConfigurationError: no PIN, an address to listen on is malformed, in use (by any process,
            another server included) or cannot be bound, a directory the server writes cannot be
            made or written (see check_writable_dirs), the bootstrap failed (its cause is in the
            log), or the TLS files cannot be used (see check_server_tls).
        HsmLoginFailed, HsmPinLocked: the token refused the PIN, or it was not tried (see
            :mod:`signserver.hsm.pin_guard`); no child was started.
        TokenNotFound, HsmUnavailable: the token cannot be reached.
    """
    from signserver.grpc_api.server import served_config
    from signserver.grpc_api.tls import check_server_tls

    set_worker("supervisor")
    workers = workers or os.cpu_count() or 1
    raise_open_file_limit()  # before any child: they inherit it
    _check_pin(config)
    with ExitStack() as held:
        # The addresses first: one in use is said at once, not after the first start's set-up.
        listen = _reserve(config.server.listen, "server.listen", held)
        http_listen = _reserve(config.http_listen, "http.listen", held)
        csc_listen = _reserve(config.csc.listen, "csc.listen", held) if config.csc.listen else ""
        metrics = held.enter_context(metrics_socket(config.metrics.listen)) if config.metrics.listen else None
        # Before any child: a directory the workers could not write would fail calls, not the start.
        check_writable_dirs(config)
        child = _fork.Process(target=_bootstrap, args=(config, demo, os.getpid()), name="bootstrap")
        child.start()
        child.join()
        if child.exitcode != 0:
            raise ConfigurationError("serve", "the first-start set-up failed; see the messages above")
        config = served_config(config)
        if not config.server.plaintext:
            check_server_tls(config.tls)  # once here: a worker would start again and again
        config = replace(config, server=replace(config.server, listen=listen),
                         http_listen=http_listen, csc=replace(config.csc, listen=csc_listen))
        if metrics is not None:
            prepare_multiprocess_directory(config.state_dir / "metrics")
        Supervisor(config, workers, metrics).run()


def _fork_with_sigterm_held(process: multiprocessing.Process) -> None:
    """Start ``process`` with SIGTERM blocked across the fork: the child unblocks it once its own
    handling is in place, so a SIGTERM sent at once is neither lost nor handled as the supervisor's."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


class Restarts:
    """When a process that died may be started again: RESTART_PAUSE_SECONDS after its death,
    doubled for each death within STEADY_SECONDS of its start, up to MAX_RESTART_PAUSE_SECONDS. A
    worker that dies at once (a fault of the machine, a token that went away) then fills the log a
    few times a minute, not every second; one that ran a while is started again at once."""

    def __init__(self):
        self._started: dict[object, float] = {}
        self._pause: dict[object, float] = {}
        self._due: dict[object, float] = {}

    def started(self, key, now: float) -> None:
        self._started[key] = now
        self._due.pop(key, None)

    def died(self, key, now: float) -> float:
        """Record the death of ``key``'s process; returns the pause before its restart."""
        steady = now - self._started.get(key, now) >= STEADY_SECONDS
        pause = RESTART_PAUSE_SECONDS if steady or key not in self._pause else \
            min(2 * self._pause[key], MAX_RESTART_PAUSE_SECONDS)
        self._pause[key] = pause
        self._due[key] = now + pause
        return pause

    def waiting(self, key) -> bool:
        """Whether ``key``'s death was recorded and its restart is still to come."""
        return key in self._due

    def due(self, key, now: float) -> bool:
        return key in self._due and now >= self._due[key]


class Supervisor:
    """Starts the workers (and the metrics process, given its socket), starts again any that dies,
    and stops them all on SIGTERM, SIGINT or SIGHUP: each drains its calls in flight, within
    STOP_GRACE_SECONDS. A SIGINT while they drain (Ctrl-C again) stops them at once; a repeated
    SIGTERM does not, as an orchestrator may send it more than once. SIGHUP stops as SIGTERM does:
    the server reads its configuration and TLS files only at start, so there is nothing to reload,
    and a hang-up of the terminal it was started from ends it, drained."""

    def __init__(self, config: Config, workers: int, metrics: socket.socket | None = None):
        self._config = config
        self._count = workers
        self._memory_bound = worker_memory_bound(config, workers)
        self._metrics = metrics
        self._workers: dict[int, multiprocessing.Process] = {}
        self._metrics_process: multiprocessing.Process | None = None
        self._stopping = False
        self._hurry = False
        self._restarts = Restarts()
        self._pid = os.getpid()  # the children's parent, which they check as they start
        self._stopped_by: int | None = None

    def run(self) -> None:
        def stop(signum, _frame):
            if self._stopping and signum == signal.SIGINT:
                self._hurry = True
            self._stopping = True
            self._stopped_by = self._stopped_by or signum

        previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
        try:
            self._start_metrics()
            for index in range(self._count):
                self._start(index)
            log.info("supervisor (pid %d): %d worker(s) on %s", os.getpid(), self._count, self._config.server.listen)
            while not self._stopping:
                now = time.monotonic()
                for index, process in list(self._workers.items()):
                    if process.is_alive() or self._stopping:
                        continue
                    if not self._restarts.waiting(index):
                        pause = self._restarts.died(index, now)
                        log.warning("worker %d (pid %s) exited with %s; starting it again in %.0f s", index,
                                    process.pid, process.exitcode, pause)
                        if self._metrics is not None:
                            forget_worker(process.pid)
                            count_worker_exit(index)
                    elif self._restarts.due(index, now):
                        self._start(index)
                metrics = self._metrics_process
                if metrics is not None and not metrics.is_alive() and not self._stopping:
                    if not self._restarts.waiting("metrics"):
                        pause = self._restarts.died("metrics", now)
                        log.warning("the metrics process exited with %s; starting it again in %.0f s",
                                    metrics.exitcode, pause)
                        count_worker_exit("metrics")
                    elif self._restarts.due("metrics", now):
                        self._start_metrics()
                time.sleep(0.2)
            if self._stopped_by == signal.SIGHUP:  # logged here, not in the handler
                log.info("supervisor: hang-up (SIGHUP); stopping as on SIGTERM")
            self._stop_all()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _start(self, index: int) -> None:
        process = _fork.Process(target=_work, args=(self._config, index, self._metrics, self._memory_bound,
                                                    self._pid), name=f"worker-{index}")
        _fork_with_sigterm_held(process)
        self._workers[index] = process
        self._restarts.started(index, time.monotonic())

    def _start_metrics(self) -> None:
        if self._metrics is None:
            return
        self._metrics_process = _fork.Process(target=_serve_metrics, args=(self._metrics, self._pid),
                                              name="metrics")
        _fork_with_sigterm_held(self._metrics_process)
        self._restarts.started("metrics", time.monotonic())
        host, port = self._metrics.getsockname()[:2]
        log.info("metrics of this node on http://%s/metrics", join_address(host, port))

    def _stop_all(self) -> None:
        log.info("supervisor: stopping %d worker(s)", len(self._workers))
        processes = [*self._workers.values(), *([self._metrics_process] if self._metrics_process else [])]
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: drain, then stop
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in processes:
            while process.is_alive() and not self._hurry and time.monotonic() < deadline:
                process.join(min(STOP_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            if process.is_alive():
                if self._hurry:
                    log.warning("supervisor: interrupted again; stopping the workers now (pid %d killed)",
                                process.pid)
                else:
                    log.warning("worker pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.join()
