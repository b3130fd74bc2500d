"""The gRPC server: TLS by default, health, reflection, and the signserver services."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from signserver.config import Config, is_loopback
from signserver.errors import ConfigurationError
from signserver.grpc_api.errors import ErrorMappingInterceptor
from signserver.grpc_api.executor import HsmExecutor
from signserver.grpc_api.health import HsmHealthReporter
from signserver.grpc_api.info_servicer import InfoServicer
from signserver.grpc_api.tls import ensure_server_certificate, server_credentials
from signserver.service import SignService
from signserver.v1 import info_pb2, info_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = [info_pb2.DESCRIPTOR.services_by_name["InfoService"].full_name]
SHUTDOWN_GRACE_SECONDS = 10.0


class GrpcServer:
    """One gRPC server bound to the configured address, running on the current event loop."""

    def __init__(self, config: Config, service: SignService, health_interval: float = 5.0):
        self._config = config
        self._service = service
        self._hsm = HsmExecutor()
        self._health = HsmHealthReporter(service, self._hsm, SERVICE_NAMES, health_interval)
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Bind, start serving, and return the bound port (useful with port 0).

        Raises: ConfigurationError: TLS material is unusable or the address cannot be bound.
        """
        server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
        info_pb2_grpc.add_InfoServiceServicer_to_server(InfoServicer(self._service, self._hsm), server)
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
            ensure_server_certificate(self._config.tls, self._config.server.host)
            bound = server.add_secure_port(listen, server_credentials(self._config.tls))
            transport = "TLS" + (" with client certificates" if self._config.tls.client_ca_file else "")
        if not bound:
            raise ConfigurationError("server.listen", f"cannot bind {listen}")
        await self._health.start()
        await server.start()
        self._server, self.port = server, bound
        log.info("serving on %s:%d (%s)", self._config.server.host, bound, transport)
        return bound

    async def wait(self) -> None:
        await self._server.wait_for_termination()

    async def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop accepting calls, let calls in flight finish within ``grace`` seconds."""
        await self._health.stop()
        if self._server is not None:
            await self._server.stop(grace)
        self._hsm.shutdown()


def serve(config: Config) -> None:
    """Run the server until SIGTERM or SIGINT, then drain calls in flight and stop.

    Raises: ConfigurationError, and the HSM errors of building the service.
    """
    service = SignService.from_config(config)

    async def main() -> None:
        server = GrpcServer(config, service)
        await server.start()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await stopping.wait()
        log.info("stopping: draining calls in flight")
        await server.stop()

    asyncio.run(main())
