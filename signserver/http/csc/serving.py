"""Serving the CSC API over HTTPS on uvicorn, in the worker's own event loop.

Every worker binds the same address with SO_REUSEPORT, like the CA's HTTP endpoints, and the
kernel spreads connections across them. The embedding is the one every HTTP front shares
(:mod:`signserver.http.asgi_server`), with its limits: a client has ``[http]
request_timeout_seconds`` to send a whole request (408 and closed after; a quiet kept-alive
connection is closed), at most MAX_CONNECTIONS connections are served at once, and a connection
arriving while the descriptor reserve is short is answered 503.

Client certificates: with ``tls.mutual`` on and a client CA, every client presents a certificate
from it, or the TLS handshake fails, as on gRPC; with ``tls.mutual`` off, one is optional and,
when presented, must chain to the client CA (gRPC Python cannot ask for an optional certificate:
with a client CA, gRPC requires one whatever ``tls.mutual`` says); without a client CA none is
asked for. A verified certificate reaches the app as ``request.state.client_certificate_der``.
"""

from __future__ import annotations

import logging
import ssl

from signserver.config import TlsConfig
from signserver.descriptors import DescriptorReserve
from signserver.http.asgi_server import AsgiServer, ConnectionLimits, TlsOptions, connection_bound
from signserver.http.csc.app import create_csc_app
from signserver.http.csc.context import CscContext

log = logging.getLogger(__name__)

# Connections one worker's front serves at once (idle ones included); beyond, 503 at once.
MAX_CONNECTIONS = 2048


def client_certificate_mode(tls: TlsConfig) -> ssl.VerifyMode:
    """Whether a client must present a certificate (see the module's docstring)."""
    if tls.client_ca_file is None:
        return ssl.CERT_NONE
    return ssl.CERT_REQUIRED if tls.mutual else ssl.CERT_OPTIONAL


class CscFront:
    """The CSC API of one worker: started and stopped on the worker's event loop. ``reserve``:
    the descriptors kept free for the HSM and the database."""

    def __init__(self, address: str, tls: TlsConfig, context: CscContext, reserve: DescriptorReserve | None = None):
        service = context.service
        limits = ConnectionLimits(service.config.http.request_timeout_seconds, connection_bound(MAX_CONNECTIONS),
                                  reserve or DescriptorReserve())
        client_ca = tls.client_ca_file
        options = TlsOptions(str(tls.cert_file), str(tls.key_file), str(client_ca) if client_ca else None,
                             client_certificate_mode(tls))
        self._server = AsgiServer(create_csc_app(context), address, "csc.listen", limits, service.clock, options,
                                  logger=log)

    @property
    def port(self) -> int | None:
        return self._server.port

    @property
    def open_connections(self) -> int:
        """Connections being served now (idle and half-sent ones included)."""
        return self._server.open_connections

    async def start(self) -> int:
        """Bind and serve; returns the bound port (useful with port 0).

        Raises: ConfigurationError: the address cannot be bound, or the TLS material is unusable.
        """
        return await self._server.start()

    async def stop(self) -> None:
        """Stop accepting connections and let requests in flight finish (within the grace)."""
        await self._server.stop()
