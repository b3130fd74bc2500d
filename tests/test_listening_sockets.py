"""The sockets the HTTP fronts and the metrics endpoint listen on give their connections
TCP_NODELAY under asyncio (which uvicorn serves on): without it, an answer written in two parts
(HTTP's head, then its body) waits for the client's delayed ACK."""

from __future__ import annotations

import asyncio
import socket

import pytest

from signserver.http.asgi_server import listening_socket
from signserver.monitoring.prometheus import metrics_socket


def nodelay_of_accepted_connection(sock: socket.socket) -> int:
    async def accept_one() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                accepted.set_result(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP,
                                                                                    socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        try:
            _reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            value = await asyncio.wait_for(accepted, 10)
            writer.close()
            return value
        finally:
            server.close()
            await server.wait_closed()
    return asyncio.run(accept_one())


@pytest.mark.parametrize("bind", [lambda: listening_socket("127.0.0.1:0", "csc.listen"),
                                  lambda: metrics_socket("127.0.0.1:0")], ids=["http front", "metrics"])
def test_accepted_connections_send_without_delay(bind):
    sock = bind()
    sock.setblocking(False)
    assert nodelay_of_accepted_connection(sock) != 0
