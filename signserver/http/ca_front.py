"""CaHttpFront: the CA's endpoints (:mod:`signserver.http.ca_app`) over plain HTTP on
``http.listen``, served by uvicorn in the worker's own event loop (:mod:`signserver.http.asgi_server`).

An idle or half-sent connection costs a descriptor and a little memory, never a thread; a
request's work goes to a pool of threads only once it has fully arrived. The limits (``[http]``
in the configuration, per worker process):

- ``max_connections``: beyond it (and never more than half the process's open-file limit) a new
  connection is answered 503 at once and closed; so is one that arrives while fewer descriptors
  than the process's reserve are free (the HSM's token files and the database need them more).
- ``request_timeout_seconds``: the time a client has to send a whole request (and to take an
  answer); a half-sent request is answered 408 and closed, a quiet kept-alive one closed.
- ``threads`` / ``tsa_threads``, ``tsa_rate_per_second`` / ``tsa_burst``, ``ocsp_rate_per_second`` /
  ``ocsp_burst``: see ca_app.
"""

from __future__ import annotations

import logging

from signserver.addresses import split_address
from signserver.config import HttpConfig
from signserver.descriptors import DescriptorReserve
from signserver.http.asgi_server import AsgiServer, ConnectionLimits, connection_bound
from signserver.http.ca_app import CaApp
from signserver.service import SignService

log = logging.getLogger(__name__)


class CaHttpFront:
    """The CA's endpoints of one worker, started and stopped on the worker's event loop.
    ``settings`` default to the service's ``[http]``, ``reserve`` to the descriptors kept free
    for the HSM and the database."""

    def __init__(self, service: SignService, listen: str, settings: HttpConfig | None = None,
                 reserve: DescriptorReserve | None = None):
        settings = settings or service.config.http
        self._listen = listen
        self._app = CaApp(service, settings)
        limits = ConnectionLimits(settings.request_timeout_seconds, connection_bound(settings.max_connections),
                                  reserve or DescriptorReserve(), per_address=settings.max_connections_per_address)
        self._server = AsgiServer(self._app.asgi, listen, "http.listen", limits, service.clock, logger=log)

    @property
    def port(self) -> int | None:
        return self._server.port

    @property
    def open_connections(self) -> int:
        """Connections being served now (idle and half-sent ones included)."""
        return self._server.open_connections

    async def start(self) -> int:
        """Bind and serve; returns the bound port (useful with port 0).

        Raises: ConfigurationError: ``http.listen`` is malformed or cannot be bound.
        """
        port = await self._server.start()
        log.info("serving CRLs, OCSP, time-stamps and CA certificates on http://%s:%d",
                 split_address(self._listen)[0], port)
        return port

    async def stop(self) -> None:
        """Close idle connections, let requests in flight finish, then stop the pools."""
        try:
            await self._server.stop()
        finally:
            self._app.shutdown()
