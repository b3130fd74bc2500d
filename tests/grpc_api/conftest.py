"""A real gRPC server on a free loopback port, in a thread of the test process."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from dataclasses import replace

import grpc
import pytest

from signserver.config import ServerConfig
from signserver.grpc_api.server import GrpcServer
from signserver.grpc_api.tls import ensure_server_certificate


class ServerThread:
    """Runs a GrpcServer on its own event loop in a background thread."""

    def __init__(self, config, service, health_interval: float = 0.2):
        self.config = replace(config, server=ServerConfig(listen="127.0.0.1:0", plaintext=config.server.plaintext))
        self._server = GrpcServer(self.config, service, health_interval=health_interval)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> "ServerThread":
        if not self.config.server.plaintext:
            ensure_server_certificate(self.config.tls, "127.0.0.1")
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._server.start(), self._loop).result(30)
        return self

    def begin_stop(self, grace: float) -> Future:
        """Start the server's stop and return once its first step has run on the loop (the
        stop's future is returned): a coroutine's first step runs before that of any coroutine
        submitted after it."""
        stopping = asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self._loop).result(10)
        return stopping

    def hold_loop(self, seconds: float) -> None:
        """Keep the server's event loop busy for ``seconds`` from now (as a long step of a handler
        would): the calls that arrive meanwhile wait in gRPC's core, not yet taken up."""
        self._loop.call_soon_threadsafe(time.sleep, seconds)

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(grace=1), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def channel(self) -> grpc.Channel:
        if self.config.server.plaintext:
            return grpc.insecure_channel(f"127.0.0.1:{self.port}")
        root = self.config.tls.cert_file.read_bytes()
        return grpc.secure_channel(f"127.0.0.1:{self.port}", grpc.ssl_channel_credentials(root))


@pytest.fixture(scope="module")
def server(config, service):
    with ServerThread(config, service) as running:
        yield running


@pytest.fixture
def channel(server):
    with server.channel() as channel:
        yield channel
