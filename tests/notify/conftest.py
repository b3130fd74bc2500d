"""The e-mail tests' SMTP server (aiosmtpd, on loopback) and a service that mails through it."""

from __future__ import annotations

import pytest
from aiosmtpd.controller import Controller

from signserver.config import SmtpConfig
from tests.conftest import free_port, Inbox, service_with


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def smtp_server(smtp_port):
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    yield inbox
    controller.stop()


@pytest.fixture
def mailing_service(config, tmp_path, clock, smtp_port):
    smtp = SmtpConfig(host="127.0.0.1", port=smtp_port, security="none", username="", password_file=None,
                      sender="signserver@example.mo")
    return service_with(config, tmp_path / "signserver.db", clock, smtp=smtp)
