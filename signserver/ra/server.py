"""`signserver ra serve`: the RA's process. Its JSON API on uvicorn, and one background thread
that sends the outbox, sends the renewal notices, asks the registry again for the renewals waiting
for it, and settles activations a stop interrupted."""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path

import uvicorn

from signserver.clock import Clock, SystemClock
from signserver.ra.api import build_app
from signserver.ra.errors import CoreUnavailable, RaError, SettingsError
from signserver.ra.mailer import OutboxMailer
from signserver.ra.settings import RaSettings
from signserver.ra.store.database import RaDatabase
from signserver.ra.workflow import RenewalWorkflow

log = logging.getLogger(__name__)

HOLDER_REGISTRY_ATTEMPTS = 1


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
                            server_name=settings.core_server_name or None)


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


def build_workflow(settings: RaSettings, clock: Clock | None = None) -> tuple[RenewalWorkflow, RaDatabase]:
    """Raises: SettingsError, StoreUnavailable."""
    registry = registry_client(settings)  # a TLS file that cannot be read stops the start here
    # A holder waits for the answer: one attempt, and the renewal waits for the background pass,
    # which asks again with the configured attempts.
    holder_registry = registry_client(settings, attempts=HOLDER_REGISTRY_ATTEMPTS)
    database = open_database(settings)
    workflow = RenewalWorkflow(database, clock or SystemClock(), settings, registry=registry,
                               holder_registry=holder_registry,
                               certificates=CoreConnection(settings),
                               documents=CoreConnection(settings, document_client))
    return workflow, database


class BackgroundPasses(threading.Thread):
    def __init__(self, workflow: RenewalWorkflow, mailer: OutboxMailer, every_seconds: float):
        super().__init__(name="ra-background", daemon=True)
        self._workflow = workflow
        self._mailer = mailer
        self._every = every_seconds
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.run_once()
            self.stopping.wait(self._every)

    def run_once(self) -> None:
        for name, work in (("activations", self._workflow.resume_activations), ("notices", self._workflow.run_notices),
                           ("registry", self._workflow.retry_registry), ("outbox", self._mailer.send_due)):
            try:
                work()
            except RaError as exc:  # the next pass tries again
                log.warning("background %s: %s", name, exc)
            except Exception:
                log.exception("background %s failed", name)


def serve(settings: RaSettings) -> None:
    """Run the RA until interrupted.

    Raises: SettingsError (a listen beyond loopback without TLS among others), StoreUnavailable.
    """
    tls = settings.api_tls  # checked before anything starts
    clock = SystemClock()
    workflow, database = build_workflow(settings, clock)
    mailer = OutboxMailer(database, clock, host=settings.smtp_host, port=settings.smtp_port,
                          sender=settings.smtp_sender)
    options = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])} if tls else {}
    try:
        config = uvicorn.Config(build_app(workflow), host=settings.host, port=settings.port, log_level="warning",
                                access_log=False, lifespan="off", **options)
        config.load()  # reads the certificate and key now, so that a bad one is a settings error
    except (OSError, ssl.SSLError) as exc:
        database.close()
        raise SettingsError(f"ra.tls_cert / ra.tls_key: cannot use {tls[0]} and {tls[1]} "
                            f"({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    server = uvicorn.Server(config)
    passes = BackgroundPasses(workflow, mailer, settings.background_seconds)
    passes.start()
    print(f"signserver RA listening on {'https' if tls else 'http'}://{settings.listen}", flush=True)
    try:
        server.run()
    finally:
        passes.stopping.set()
        passes.join(timeout=10)
        database.close()
