"""`signserver ra serve`: the RA's process. Its JSON API and its web pages in one app on uvicorn,
and one background thread that sends the outbox, sends the renewal notices, asks the registry again
for the renewals waiting for it, settles activations a stop interrupted and removes expired page
sessions."""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import threading
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from signserver.asgi_faults import FaultAfterAnswer
from signserver.clock import Clock, SystemClock
from signserver.ra.api import build_app
from signserver.ra.application import CORE_SIGNING_SECONDS
from signserver.ra.errors import CoreUnavailable, RaError, SettingsError
from signserver.ra.mailer import OutboxMailer
from signserver.ra.serving_address import recorded
from signserver.ra.settings import RaSettings
from signserver.ra.store.database import RaDatabase
from signserver.ra.workflow import RenewalWorkflow

log = logging.getLogger(__name__)

HOLDER_REGISTRY_ATTEMPTS = 1
# How long a stop waits for the requests under way and the connections still open. Without a
# bound, a TLS client that keeps its connection and never answers the server's close_notify held
# the stop for asyncio's own 30 s shutdown timeout.
SHUTDOWN_GRACE_SECONDS = 10


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"ra.{setting}: cannot read {path} ({exc.strerror}); the RA reaches the core with "
                            "its own client certificate: `signserver ca issue-client --role ra ra`") from None


def certificate_client(settings: RaSettings):
    """The core's CertificateService over mutual TLS with the RA's client certificate.

    Raises: SettingsError: the certificate, its key or the roots cannot be read.
    """
    from signserver.client.certificates import CertificateClient

    cert, key, roots = settings.client_files
    return CertificateClient(settings.core_address, root_certificates=_read(roots, "ca_roots"),
                             client_certificate=_read(cert, "client_cert"), client_key=_read(key, "client_key"),
                             timeout_seconds=settings.core_timeout_seconds)


def document_client(settings: RaSettings):
    """The core's DocumentService with the RA's application client certificate (the holder signs
    the application document through it; uploads are verified with it).

    Raises: SettingsError: the certificate, its key or the roots cannot be read.
    """
    from signserver.client import SignServerClient

    cert, key = settings.application_client_files
    roots = settings.client_files[2]
    return SignServerClient(settings.core_address, root_certificates=_read(roots, "ca_roots"),
                            client_certificate=_read(cert, "application_client_cert"),
                            client_key=_read(key, "application_client_key"),
                            server_name=settings.core_server_name or None,
                            timeout=CORE_SIGNING_SECONDS)  # a signing's claim outlasts it (SIGNING_CLAIM)


class CoreConnection:
    """A client (``make``: certificate_client by default; document_client, registry_client) made on
    first use, and tried again until its files can be read, so that the RA serves its holders'
    identity steps before its certificates are issued. A file that cannot be read yet is raised as
    ``unavailable`` (CoreUnavailable; RegistryUnavailable for the registry's client)."""

    def __init__(self, settings: RaSettings, make=certificate_client, unavailable: type[RaError] = CoreUnavailable):
        self._settings = settings
        self._make = make
        self._unavailable = unavailable
        self._client = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        with self._lock:
            if self._client is None:
                try:
                    self._client = self._make(self._settings)
                except SettingsError as exc:
                    raise self._unavailable(str(exc)) from None
        return getattr(self._client, name)


def registry_client(settings: RaSettings, attempts: int | None = None):
    """The identity registry's client as the settings describe it (TLS included); ``attempts``
    per call, else ``registry_attempts``.

    Raises: SettingsError: the API key or a TLS file cannot be read.
    """
    from signserver.ra.registry import RegistryClient, read_api_key, registry_ssl_context

    api_key = read_api_key(settings.registry_api_key_file) if settings.registry_api_key_file else ""
    context = registry_ssl_context(settings.registry_ca, settings.registry_client_files)
    return RegistryClient(settings.registry_url, timeout_seconds=settings.registry_timeout_seconds,
                          attempts=attempts or settings.registry_attempts, client_id=settings.registry_client_id,
                          api_key=api_key, ssl_context=context)


def open_database(settings: RaSettings) -> RaDatabase:
    database = RaDatabase(settings.database)
    database.migrate()
    return database


def build_workflow(settings: RaSettings, clock: Clock | None = None, *, certificates=None,
                   documents=None) -> tuple[RenewalWorkflow, RaDatabase]:
    """The renewal workflow; ``certificates`` and ``documents`` (the core's connections) are made
    here unless given (the pages share ``certificates``).

    Raises: SettingsError, StoreUnavailable."""
    registry = registry_client(settings)  # a TLS file that cannot be read stops the start here
    # A holder waits for the answer: one attempt, and the renewal waits for the background pass,
    # which asks again with the configured attempts.
    holder_registry = registry_client(settings, attempts=HOLDER_REGISTRY_ATTEMPTS)
    database = open_database(settings)
    workflow = RenewalWorkflow(database, clock or SystemClock(), settings, registry=registry,
                               holder_registry=holder_registry,
                               certificates=certificates or CoreConnection(settings),
                               documents=documents or CoreConnection(settings, document_client))
    return workflow, database


def build_web_context(settings: RaSettings, clock: Clock, workflow: RenewalWorkflow, database: RaDatabase,
                      certificates):
    """What the pages are given (signserver/ra/web/context.py).

    Raises: SettingsError: the RA's secret key cannot be read or made (operator accounts).
    """
    from signserver.ra.holder_sign_in import HolderSignIn
    from signserver.ra.operations import RaOperations
    from signserver.ra.web.captcha import Captcha
    from signserver.ra.web.context import WebContext
    from signserver.ra.web.i18n import load_catalogues
    from signserver.ra.web.limits import RateLimits
    from signserver.ra.web.rendering import Templates
    from signserver.ra.web.sessions import SessionStore

    sessions = SessionStore(database, clock, settings)
    return WebContext(settings=settings, clock=clock, workflow=workflow,
                      operations=RaOperations(database, clock, certificates), certificates=certificates,
                      holder_sign_in=HolderSignIn(database, clock, settings),
                      operators=_operator_accounts(settings, database, clock, sessions),
                      sessions=sessions, limits=RateLimits(settings),
                      captcha=Captcha(clock, sessions), templates=Templates.create(load_catalogues()))


def _operator_accounts(settings: RaSettings, database: RaDatabase, clock: Clock, sessions):
    """The operators' accounts; disabling one or resetting its password ends its ``sessions``.

    Raises: SettingsError: the RA's secret key cannot be read or made."""
    from signserver.ra.operator_accounts import OperatorAccounts

    return OperatorAccounts.from_settings(settings, database, clock, sessions)


def build_site(settings: RaSettings, clock: Clock, workflow: RenewalWorkflow, database: RaDatabase,
               certificates):
    """The RA's ASGI app: the JSON API and the pages, and the pages' context.

    Raises: SettingsError.
    """
    from signserver.ra.web.app import build_site as assemble

    context = build_web_context(settings, clock, workflow, database, certificates)
    return assemble(context, api_routes=build_app(workflow, settings.provider_name).routes), context


class _LoggedByTheSite:
    """Where a fault raised after its answer went out goes: the site's handler of ``Exception``
    (signserver/ra/web/app.py) answered it and logged it with its traceback when it was the RA's
    fault (error_page), so here it is noted at DEBUG only, not logged twice."""

    def error(self, message: str, *args: object, exc_info=None, **_) -> None:
        log.debug(message, *args, exc_info=exc_info)


def served_app(app):
    """``app`` as uvicorn serves it: a fault raised once its answer went out whole (Starlette raises
    it again after its handler answered) leaves the connection open for the client's next request;
    uvicorn closed it without the answer saying ``Connection: close``, and a browser or client
    reusing it met a reset (signserver/asgi_faults.py)."""
    return FaultAfterAnswer(app, _LoggedByTheSite())


def _tls_options(settings: RaSettings) -> tuple[dict, object]:
    """uvicorn's TLS options and HTTP protocol (the operators' client certificates, when set).

    Raises: SettingsError."""
    from signserver.ra.web.client_certificate import http_protocol, tls_options

    return tls_options(settings), http_protocol(settings)


class BackgroundPasses(threading.Thread):
    def __init__(self, workflow: RenewalWorkflow, mailer: OutboxMailer, every_seconds: float, sessions=None):
        super().__init__(name="ra-background", daemon=True)
        self._workflow = workflow
        self._mailer = mailer
        self._sessions = sessions  # the pages' SessionStore: expired sessions are removed
        self._every = every_seconds
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.run_once()
            self.stopping.wait(self._every)

    def run_once(self) -> None:
        passes = [("activations", self._workflow.resume_activations), ("notices", self._workflow.run_notices),
                  ("registry", self._workflow.retry_registry), ("outbox", self._mailer.send_due)]
        if self._sessions is not None:
            passes.append(("sessions", self._sessions.remove_expired))
        for name, work in passes:
            try:
                work()
            except RaError as exc:  # the next pass tries again
                log.warning("background %s: %s", name, exc)
            except Exception:
                log.exception("background %s failed", name)


def serve(settings: RaSettings, demo: bool = False) -> None:
    """Run the RA until interrupted; ``demo``: with the demonstration's holder, operator and
    renewal (signserver/ra/demo.py).

    Raises: SettingsError (a listen beyond loopback without TLS among others; with listen port 0,
    the state directory not writable), StoreUnavailable.
    """
    tls = settings.api_tls  # checked before anything starts
    options, protocol = _tls_options(settings)
    try:
        listening = _listening_socket(settings.host, settings.port)
    except OSError as exc:
        raise SettingsError(f"ra.listen: cannot listen on {settings.listen}: {exc.strerror or exc}") from None
    try:
        with _terminated_after_cleanup():
            if settings.port == 0:  # any free port: the one bound is in the address printed and in the links
                settings = settings.listening_on(listening.getsockname()[1])
                # The commands, other processes, link their notices to it (signserver/ra/serving_address.py).
                with recorded(settings.state_dir, settings.listen, settings.public_url):
                    _serve(settings, listening, tls, options, protocol, demo)
            else:
                _serve(settings, listening, tls, options, protocol, demo)
    finally:
        listening.close()


class _Terminated(BaseException):
    """SIGTERM arrived (uvicorn raises it again once it stopped serving)."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


@contextmanager
def _terminated_after_cleanup():
    """SIGTERM unwinds the block, so that its cleanup runs (the background passes stopped, the
    database closed, the recorded address removed), and is then raised again for the handler
    before it (by default: the process ends by it). uvicorn, once it stopped serving, raises the
    signal it stopped for again, which with the default handler ended the process at once."""
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    previous = signal.SIG_DFL if previous is None else previous
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, previous)
        signal.raise_signal(signal.SIGTERM)  # as it would have been without this block
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve(settings: RaSettings, listening: socket.socket, tls, options: dict, protocol, demo: bool) -> None:
    """Raises: SettingsError, StoreUnavailable (as serve)."""
    clock = SystemClock()
    certificates = CoreConnection(settings)  # one connection for the workflow and the pages
    workflow, database = build_workflow(settings, clock, certificates=certificates)
    mailer = OutboxMailer.from_settings(database, clock, settings)
    try:
        app, context = build_site(settings, clock, workflow, database, certificates)
    except Exception:
        database.close()
        raise
    try:
        # uvicorn's access log is off: a notice link's path carries a token; the app logs requests
        # itself with it masked (signserver/ra/web/security.py). proxy_headers off: uvicorn would
        # otherwise take X-Forwarded-For from loopback (the default listen address) as the client's
        # address, and a client behind a terminator on the same host that passes the header through
        # would pick the address the rate limits count (signserver/ra/web/limits.py). The RA has no
        # trusted-proxy setting: it is reached directly.
        config = uvicorn.Config(served_app(app), host=settings.host, port=settings.port, log_level="warning",
                                access_log=False, lifespan="off", http=protocol, proxy_headers=False,
                                timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS, **options)
        config.load()  # reads the certificate and key now, so that a bad one is a settings error
    except (OSError, ssl.SSLError) as exc:
        database.close()
        raise SettingsError(f"ra.tls_cert / ra.tls_key: cannot use {tls[0]} and {tls[1]} "
                            f"({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    server = uvicorn.Server(config)
    passes = BackgroundPasses(workflow, mailer, settings.background_seconds, sessions=context.sessions)
    passes.start()
    if demo:
        from signserver.ra.demo import prepare_demo

        prepare_demo(settings, database, workflow, context.operations, context.operators, stopping=passes.stopping)
    print(f"signserver RA listening on {'https' if tls else 'http'}://{settings.listen}", flush=True)
    print(f"signserver RA pages at {settings.public_url}/", flush=True)
    try:
        server.run(sockets=[listening])
    finally:
        passes.stopping.set()
        passes.join(timeout=10)
        database.close()


def _listening_socket(host: str, port: int) -> socket.socket:
    """The RA's socket, bound and listening before anything starts or says it listens (uvicorn
    binds only once it runs, and leaves with status 3 when the address is in use).

    Raises: OSError: the address cannot be bound (in use, not this machine's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
        listening.listen(2048)
    except OSError:
        listening.close()
        raise
    listening.set_inheritable(True)
    return listening
