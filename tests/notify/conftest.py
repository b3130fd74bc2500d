"""The e-mail tests' SMTP server (aiosmtpd, on loopback) and a service that mails through it."""

from __future__ import annotations

import socket

import pytest
from aiosmtpd.controller import Controller

from signserver.config import SmtpConfig
from tests.conftest import Inbox, service_with


def bound_socket() -> socket.socket:
    """A loopback socket bound to a port the system chose (port 0, read back with getsockname),
    not listening yet: the port is this test's from now on (no other process can be given it), and
    connections to it are refused, as when no SMTP server runs, until a server listens on it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


class SocketController(Controller):
    """aiosmtpd's Controller serving on a socket already bound (see :func:`bound_socket`); it
    closes the socket when stopped."""

    def __init__(self, handler, sock: socket.socket, **kwargs):
        self._sock = sock
        super().__init__(handler, hostname="127.0.0.1", port=sock.getsockname()[1], **kwargs)

    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


def serve(handler, sock: socket.socket, **kwargs) -> SocketController:
    """A real SMTP server, started, on ``sock``; the caller stops it."""
    controller = SocketController(handler, sock, **kwargs)
    controller.start()
    return controller


@pytest.fixture
def smtp_socket():
    sock = bound_socket()
    yield sock
    sock.close()


@pytest.fixture
def smtp_port(smtp_socket) -> int:
    return smtp_socket.getsockname()[1]


@pytest.fixture
def smtp_server(smtp_socket):
    inbox = Inbox()
    controller = serve(inbox, smtp_socket)
    yield inbox
    controller.stop()


@pytest.fixture
def mailing_service(config, tmp_path, clock, smtp_port):
    smtp = SmtpConfig(host="127.0.0.1", port=smtp_port, security="none", username="", password_file=None,
                      sender="signserver@example.mo")
    return service_with(config, tmp_path / "signserver.db", clock, smtp=smtp)
