"""The gRPC server: TLS by default, health, reflection, and the signserver services."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import signal
import threading
from dataclasses import dataclass, replace

import grpc
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from signserver.addresses import is_loopback, split_address
from signserver.config import Config
from signserver.errors import ConfigurationError, SignServerError
from signserver.grpc_api.errors import ErrorMappingInterceptor
from signserver.grpc_api.account_servicer import AccountServicer
from signserver.grpc_api.certificate_servicer import CertificateServicer
from signserver.grpc_api.document_servicer import DocumentServicer
from signserver.blocking_calls import BlockingCalls
from signserver.grpc_api.health import HsmHealthReporter
from signserver.grpc_api.info_servicer import InfoServicer
from signserver.grpc_api.signing_servicer import SigningServicer
from signserver.grpc_api.spool import sweep
from signserver.grpc_api.stream_limits import DocumentLimits
from signserver.grpc_api.tls import client_ca_config, ensure_server_certificate, server_credentials, with_client_ca
from signserver.hsm.module import pkcs11_lock_is_free
from signserver.monitoring.meter import meter
from signserver.outlasting import off_the_loop
from signserver.http.csc.context import CscContext
from signserver.http.csc.serving import CscFront
from signserver.http.ca_front import CaHttpFront
from signserver.service import SignService
from signserver.signing.retention import store_retention
from signserver.store.leases import DEFAULT_LEASE_SECONDS, Lease, LeaseKeeper
from signserver.v1 import (
    account_pb2,
    account_pb2_grpc,
    certificate_pb2,
    certificate_pb2_grpc,
    document_pb2,
    document_pb2_grpc,
    info_pb2,
    info_pb2_grpc,
    signing_pb2,
    signing_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = [
    info_pb2.DESCRIPTOR.services_by_name["InfoService"].full_name,
    signing_pb2.DESCRIPTOR.services_by_name["SigningService"].full_name,
    account_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
    certificate_pb2.DESCRIPTOR.services_by_name["CertificateService"].full_name,
    document_pb2.DESCRIPTOR.services_by_name["DocumentService"].full_name,
]
SHUTDOWN_GRACE_SECONDS = 10.0
# HTTP/2 streams one connection may have open at once (its memory is bounded by it): gRPC refuses
# further streams with UNAVAILABLE, which a client may retry, as the stream was never processed.
# Well above what a load test keeps in flight on one connection; document streams have their own,
# lower, bounds.
MAX_STREAMS_PER_CONNECTION = 1000
# A connection with no call for this long is closed (HTTP/2 GOAWAY; a client reconnects when it
# next calls): idle connections would otherwise hold a descriptor and memory each, without bound.
# No limit on a busy connection's age: load tests keep theirs for hours.
CONNECTION_IDLE_SECONDS = 300.0


@dataclass(frozen=True)
class WorkerPools:
    """A worker's three BlockingCalls, shared by every front it serves (gRPC, the CSC API), so
    that the HSM, password checks and PDF work are bounded once per process, not once per front."""

    hsm: BlockingCalls
    accounts: BlockingCalls
    documents: BlockingCalls

    @classmethod
    def create(cls, document_limits: DocumentLimits = DocumentLimits()) -> "WorkerPools":
        return cls(hsm=BlockingCalls("hsm", threads=2, free_now=pkcs11_lock_is_free),
                   accounts=BlockingCalls("accounts", threads=4),
                   # PDF work (tens to hundreds of milliseconds a document) never queues ahead of a SignHash.
                   documents=BlockingCalls("documents", threads=document_limits.document_threads))

    def stop_starting(self) -> None:
        """The worker stops: document jobs not yet started are refused from now on (ServerStopping),
        so that the stop's grace waits only for jobs under way, which take up to seconds each.
        The other pools' calls take milliseconds, and some finish what a request began (the
        record of a CSC operation, an RA's admitted request): they run on until the grace ends."""
        self.documents.stop_starting()

    def shutdown(self) -> None:
        for pool in (self.hsm, self.accounts, self.documents):
            pool.shutdown()


class GrpcServer:
    """One gRPC server bound to the configured address, running on the current event loop."""

    def __init__(self, config: Config, service: SignService, health_interval: float = 5.0,
                 background: bool = True, worker: int = 0, document_limits: DocumentLimits = DocumentLimits(),
                 connection_idle_seconds: float = CONNECTION_IDLE_SECONDS, pools: WorkerPools | None = None):
        """``pools``: the worker's, when other fronts share them (the worker then shuts them
        down); by default the server makes its own and shuts them down on :meth:`stop`."""
        self._config = config
        self._connection_idle_ms = int(connection_idle_seconds * 1000)
        self._service = service
        self._worker = worker
        self._document_limits = document_limits
        self._own_pools = pools is None
        self.pools = pools or WorkerPools.create(document_limits)
        self._hsm, self._accounts, self._documents = self.pools.hsm, self.pools.accounts, self.pools.documents
        self._health = HsmHealthReporter(service, self._hsm, SERVICE_NAMES, health_interval)
        self._background = BackgroundWork(service) if background else None
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Bind, start serving, and return the bound port (useful with port 0).

        Raises: ConfigurationError: TLS material is unusable or the address cannot be bound.
        """
        server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()],
                                 options=[("grpc.max_receive_message_length", 4 * 1024 * 1024),
                                          ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
                                          ("grpc.max_connection_idle_ms", self._connection_idle_ms)])
        info_pb2_grpc.add_InfoServiceServicer_to_server(
            InfoServicer(self._service, self._hsm, self._accounts, self._worker), server)
        signing_pb2_grpc.add_SigningServiceServicer_to_server(
            SigningServicer(self._service, self._hsm, self._accounts), server)
        account_pb2_grpc.add_AccountServiceServicer_to_server(AccountServicer(self._service, self._accounts), server)
        certificate_pb2_grpc.add_CertificateServiceServicer_to_server(
            CertificateServicer(self._service, self._hsm, self._accounts), server)
        document_pb2_grpc.add_DocumentServiceServicer_to_server(
            DocumentServicer(self._service, self._accounts, self._documents, self._config.state_dir / "spool",
                             self._document_limits), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health.servicer, server)
        reflection.enable_server_reflection(
            [*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME],
            server,
        )
        listen = self._config.server.listen
        if self._config.server.plaintext:
            if not is_loopback(self._config.server.host):  # load_config checks too; never trust one check
                raise ConfigurationError("server.plaintext", "plaintext is allowed only on loopback")
            bound = server.add_insecure_port(listen)
            transport = "PLAINTEXT"
        else:
            bound = server.add_secure_port(listen, server_credentials(self._config.tls))
            transport = "TLS" + (" with client certificates" if self._config.tls.client_ca_file else "")
        if not bound:
            raise ConfigurationError("server.listen", f"cannot bind {listen}")
        # Files of a worker that was killed (and is being started again now) go: see spool.sweep.
        await off_the_loop(sweep, self._config.state_dir / "spool")
        await self._health.start()
        if self._background:
            self._background.start()
        await server.start()
        self._server, self.port = server, bound
        log.info("worker %d (pid %d) serving on %s:%d (%s)", self._worker, os.getpid(), self._config.server.host,
                 bound, transport)
        return bound

    async def wait(self) -> None:
        await self._server.wait_for_termination()

    async def stop_serving_health(self) -> None:
        """Tell health checkers at once that this worker is going (NOT_SERVING for every
        service), before any of its fronts drains."""
        await self._health.stop()

    async def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop accepting calls, refuse document jobs not yet started (see
        WorkerPools.stop_starting), let calls in flight finish within ``grace`` seconds."""
        self.pools.stop_starting()
        await self._health.stop()
        if self._server is not None:
            await self._server.stop(grace)
        if self._background:
            self._background.stop()
        if self._own_pools:
            self.pools.shutdown()


# The background work runs in one process across every node of a database: the one holding this
# lease. A node that dies is replaced within the lease's time; one that stops cleanly at once.
BACKGROUND_LEASE = "background-work"
# A background task still running after this long at a stop is left to its lease: the fronts'
# drain (SHUTDOWN_GRACE_SECONDS) and this wait stay within the supervisor's grace (20 s).
BACKGROUND_STOP_SECONDS = 8.0
# Every node reports its certificates' ends this often: a renewal or a re-certification made by the
# node holding the lease is otherwise seen by the others' metrics only when their workers restart.
EXPIRY_REPORT_SECONDS = 300


class BackgroundWork:
    """The server's background thread: queues the locks' e-mail, sends queued e-mail and seals
    the audit log when due, while it holds the database lease ``BACKGROUND_LEASE`` (renewed each
    round); on every node, removes its expired spooled documents and reports its certificates' ends."""

    def __init__(self, service: SignService, poll_seconds: float = 1.0, lease_seconds: int = DEFAULT_LEASE_SECONDS):
        self._service = service
        self._poll = poll_seconds
        self.lease = LeaseKeeper(Lease(service.database, service.clock, BACKGROUND_LEASE, lease_seconds),
                                 service.clock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="background", daemon=True)
        self._retention = store_retention(service.database, service.audit, service.clock, service.config.retention)
        self._expiries_reported: datetime.datetime | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=BACKGROUND_STOP_SECONDS)
        if self._thread.is_alive():
            # A task still runs: sealing the stop or releasing the lease now would let another
            # node start the same work beside it. The lease runs out instead.
            log.warning("background task still running at stop; the lease %s is left to expire", BACKGROUND_LEASE)
            return
        try:
            if not self.lease.confirm():
                return  # another process does the background work, and seals
            self._service.sealer.server_stopping()  # a clean stop, sealed: no heartbeat is due after it
            self.lease.release()  # after the stop's seal: the next holder's start follows it
            meter().background_lease(False)
        except SignServerError as exc:
            log.warning("could not seal the audit log and release the background lease on the way out: %s", exc)

    def _holds_lease(self, renew: bool) -> bool:
        """Take or keep the lease; on taking it, record that this process now seals the log."""
        try:
            held = self.lease.keep(renew)
        except SignServerError as exc:
            log.warning("background work paused: the lease %s cannot be renewed: %s", BACKGROUND_LEASE, exc)
            meter().background_lease(False)
            return False
        meter().background_lease(held)
        if held and self.lease.began:
            log.info("background work runs here (pid %d) from now on", os.getpid())
            try:
                self._service.sealer.server_started()  # from here on the seals carry a heartbeat
            except SignServerError as exc:
                log.warning("could not record the start in the audit log: %s", exc)
        return held

    def _run(self) -> None:
        while not self._stop.is_set():
            # Every node sweeps its own spool directory (it may not be shared); removing a row
            # twice is harmless, only the remover deletes the file.
            self._run_task(self._service.pades.remove_expired_documents)
            self._run_task(self._report_expiries_if_due)
            if self._holds_lease(renew=True):
                # The locks' notices first: their e-mail goes out in the same round.
                for task in (self._service.lock_notices.queue_due, self._service.outbox.send_due,
                             self._service.sealer.seal_if_due,
                             self._service.ca.refresh_crls_if_due, self._renew_service_keys,
                             self._service.ca.send_expiry_notices,
                             self._service.master_rotation.background_round,
                             self._service.signer.forget_expired_tokens, self._retention.background_round):
                    if self._stop.is_set() or not self._holds_lease(renew=False):
                        break
                    self._run_task(task)
            self._stop.wait(self._poll)

    def _report_expiries_if_due(self) -> None:
        """This node's certificates' ends, reported every EXPIRY_REPORT_SECONDS whether or not it
        holds the lease."""
        now = self._service.clock.now()
        reported = self._expiries_reported
        if reported is not None and now - reported < datetime.timedelta(seconds=EXPIRY_REPORT_SECONDS):
            return
        self._expiries_reported = now
        report_certificate_expiries(self._service, self._service.config)

    def _renew_service_keys(self) -> None:
        """The OCSP responder's and TSA's certificates renewed when due, and their new ends
        reported at once (the other workers report theirs at start; the scrape keeps the latest)."""
        if self._service.ca.renew_service_keys_if_due():
            report_certificate_expiries(self._service, self._service.config)

    @staticmethod
    def _run_task(task) -> None:
        try:
            task()
        except Exception:  # background work must outlive one failure
            log.exception("background task %s failed", task.__qualname__)


def bootstrap(config: Config, service: SignService) -> None:
    """First start on the embedded defaults: create the master key that wraps holders' signing
    data packages and the CA, and have it issue the server's TLS certificate and the client CA
    bundle (see :func:`served_config`).

    Raises: HsmError, ConfigurationError.
    """
    service.check_key_settings()  # a key algorithm the token cannot use stops the start, naming its setting
    service.packages.ensure_master()  # made on the first start; checked on this token on every start
    # The OTP sealing keys too, before any worker exists: workers making them on first use at once
    # could each make one under the same label, and seeds sealed by one would not open in another.
    service.sealing.describe()
    status = service.ca.status()
    if not status.ready and not status.awaiting_external_root:
        # An interrupted set-up (of either kind) is finished here: each step runs only if missing.
        log.info("the CA's set-up is not finished: making %s", ", ".join(status.missing))
        service.ca.initialise("server:bootstrap")
    if config.server.plaintext:
        return
    ready = service.ca.status().ready
    ensure_server_certificate(config.tls, config.server.host, service.ca if ready else None)
    if ready:
        with_client_ca(config.tls, service.ca, config.state_dir)


def served_config(config: Config) -> Config:
    """The configuration to serve with after :func:`bootstrap`: on the defaults with mutual TLS,
    client certificates from this server's CA are required."""
    if config.server.plaintext:
        return config
    return replace(config, tls=client_ca_config(config.tls, config.state_dir))


def report_certificate_expiries(service: SignService, config: Config) -> None:
    """Tell the meter when the certificates this worker serves with end: the TLS server
    certificate and the CA's (an operator alerts on them well before). Never raises: the worker
    serves whether or not they can be read."""
    ends: dict[str, x509.Certificate | None] = {}
    # Each read on its own: a TLS file that cannot be read leaves the CA's certificates reported.
    try:
        if not config.server.plaintext:
            ends["tls"] = x509.load_pem_x509_certificate(config.tls.cert_file.read_bytes())
    except (OSError, ValueError) as exc:
        log.warning("the TLS certificate's expiry is not reported: %s", exc)
    try:
        status = service.ca.status()
        ends.update({"root-ca": status.root, "issuing-ca": status.issuing, "ocsp": status.ocsp_responder,
                     "tsa": status.tsa})
    except SignServerError as exc:
        log.warning("the CA certificates' expiry is not reported: %s", exc)
    for name, certificate in ends.items():
        if certificate is not None:
            meter().certificate_expiry(name, certificate.not_valid_after_utc.timestamp())


class Worker:
    """One serving process: its own HSM session, gRPC server and HTTP endpoints."""

    def __init__(self, config: Config, index: int, background: bool):
        self.config = config
        self.index = index
        self.background = background

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain calls in flight and stop."""
        service = SignService.from_config(self.config)
        service.pades  # noqa: B018 -- made now, before any thread, not by the first document's call

        async def main() -> None:
            # First: a SIGTERM that arrives while the fronts start is kept, and stops the worker
            # once they have started.
            stopping = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stopping.set)
            # So that no call waits for a checkpoint: the worker of the background work runs them.
            checkpoints = service.database.checkpoint_in_background(run_here=self.background)
            try:
                pools = WorkerPools.create()
                server = GrpcServer(self.config, service, background=self.background, worker=self.index,
                                    document_limits=DocumentLimits(idle_seconds=self.config.server.stream_idle_seconds),
                                    pools=pools)
                await server.start()
                csc = await self._start_csc(service, pools)
                http = CaHttpFront(service, self.config.http_listen)
                await http.start()
                report_certificate_expiries(service, self.config)
                await stopping.wait()
                log.info("worker %d: stopping, draining calls in flight", self.index)
                pools.stop_starting()
                # Balancers stop sending calls first; then the fronts drain side by side, so that
                # a request still arriving on one holds neither the others nor the drain past
                # the supervisor's grace (each front's grace after the other's would).
                await server.stop_serving_health()
                await asyncio.gather(http.stop(), *([csc.stop()] if csc is not None else []), server.stop())
                pools.shutdown()
            finally:
                if checkpoints is not None:
                    checkpoints.stop()

        asyncio.run(main())

    async def _start_csc(self, service: SignService, pools: WorkerPools) -> CscFront | None:
        """The CSC API's HTTPS front on ``[csc] listen`` (none when it is empty).

        Raises: ConfigurationError: the address cannot be bound or TLS is unusable.
        """
        if not self.config.csc.listen:
            return None
        if self.config.server.plaintext:
            # The CSC front carries holders' passwords: it has no plaintext mode.
            log.warning("worker %d: no CSC front: server.plaintext is set and the CSC API is served over TLS only",
                        self.index)
            return None
        front = CscFront(self.config.csc.listen, self.config.tls,
                         CscContext(service, pools.hsm, pools.accounts, pools.documents, worker=self.index))
        port = await front.start()
        log.info("worker %d (pid %d) CSC API on https://%s:%d/csc/v2/ (OpenAPI: /csc/v2/openapi.json)", self.index,
                 os.getpid(), split_address(self.config.csc.listen)[0], port)
        return front
