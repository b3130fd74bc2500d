"""Serving the CSC API over HTTPS on uvicorn, in the worker's own event loop.

Every worker binds the same address with SO_REUSEPORT, like the CA's HTTP endpoints, and the
kernel spreads connections across them. Client certificates are optional: when one is presented
it must chain to the configured client CA, and the app then sees it (``request.state.
client_certificate_der``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import Iterator

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from signserver.config import TlsConfig, split_address
from signserver.errors import ConfigurationError
from signserver.http.csc.app import create_csc_app
from signserver.http.csc.context import CscContext

log = logging.getLogger(__name__)

# Bounds of one worker's front: connections served at once (beyond them, 503 at once), idle
# keep-alive, and the time to drain requests in flight on a stop.
MAX_CONNECTIONS = 2048
KEEP_ALIVE_SECONDS = 30
SHUTDOWN_GRACE_SECONDS = 10


class ClientCertificateProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, handing each request of a connection the client
    certificate TLS verified on it (ASGI has no standard place for it)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            # Per connection: each request's state starts as a copy of this.
            self.app_state = {**self.app_state, "client_certificate_der": der}


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signals to the worker, which stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listening_socket(address: str) -> socket.socket:
    """A socket bound to ``address`` that every worker process may bind too.

    Raises: ConfigurationError: the address is malformed or cannot be bound.
    """
    try:
        host, port = split_address(address)
    except ValueError as exc:
        raise ConfigurationError("csc.listen", str(exc)) from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on connections whose socket says
    # so, and without it every answer waited 40 ms for the client's delayed ACK (HTTP's head and
    # body leave in two writes).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # every worker process serves the port
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigurationError("csc.listen", f"cannot bind {address}: {exc.strerror or exc}") from None
    return sock


class CscFront:
    """The CSC API of one worker: started and stopped on the worker's event loop."""

    def __init__(self, address: str, tls: TlsConfig, context: CscContext):
        self._address = address
        self._tls = tls
        self._context = context
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Bind and serve; returns the bound port (useful with port 0).

        Raises: ConfigurationError: the address cannot be bound, or the TLS material is unusable.
        """
        sock = listening_socket(self._address)
        self.port = sock.getsockname()[1]
        client_ca = self._tls.client_ca_file
        config = uvicorn.Config(
            create_csc_app(self._context), http=ClientCertificateProtocol, lifespan="off", log_config=None,
            access_log=False, ssl_certfile=str(self._tls.cert_file), ssl_keyfile=str(self._tls.key_file),
            ssl_cert_reqs=ssl.CERT_OPTIONAL if client_ca else ssl.CERT_NONE,
            ssl_ca_certs=str(client_ca) if client_ca else None, limit_concurrency=MAX_CONNECTIONS,
            timeout_keep_alive=KEEP_ALIVE_SECONDS, timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
            server_header=False)
        try:
            config.load()
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise ConfigurationError("tls.cert_file", f"the CSC front cannot use the TLS material: {exc}") from None
        self._server = _EmbeddedServer(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise ConfigurationError("csc.listen", "the CSC front stopped as it started")
            await asyncio.sleep(0.01)
        return self.port

    async def stop(self) -> None:
        """Stop accepting connections and let requests in flight finish (within the grace)."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
