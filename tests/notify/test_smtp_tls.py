"""SMTP over TLS and STARTTLS: the server's certificate and host name are checked."""

from __future__ import annotations

import datetime
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from signserver.config import SmtpConfig
from signserver.notify.outbox import queue_email
from signserver.store.schema import outbox
from tests.conftest import Inbox, service_with
from tests.notify.conftest import bound_socket
from tests.notify.conftest import serve as serve_on


def certificate(folder, name: str, san: x509.GeneralName) -> tuple:
    """A self-signed server certificate for ``san``; returns (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem, key_pem = folder / f"{name}.pem", folder / f"{name}.key"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert_pem, key_pem


@pytest.fixture(params=["tls", "starttls"])
def security(request):
    return request.param


def serve(security: str, cert_pem, key_pem):
    """An SMTP server over ``security`` on a port of its own; returns its inbox, its controller
    and its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_pem, key_pem)
    inbox = Inbox()
    sock = bound_socket()
    if security == "tls":
        controller = serve_on(inbox, sock, ssl_context=context)
    else:
        controller = serve_on(inbox, sock, tls_context=context, require_starttls=True)
    return inbox, controller, sock.getsockname()[1]


def send_one(config, tmp_path, clock, security: str, port: int):
    smtp = SmtpConfig(host="127.0.0.1", port=port, security=security, username="", password_file=None,
                      sender="signserver@example.mo")
    service = service_with(config, tmp_path / "signserver.db", clock, smtp=smtp)
    with service.database.transaction() as conn:
        queue_email(conn, clock.now(), ["one@example.mo"], "password_changed", holder_name="陳大文",
                    username="chan.tai.man", time="2026.11.21 10:26:06 +0800")
    sent = service.outbox.send_due()
    with service.database.read() as conn:
        return sent, conn.execute(select(outbox)).one()


@pytest.mark.parametrize("trusted, san, delivered, error", [
    (False, x509.IPAddress(ipaddress.ip_address("127.0.0.1")), False, "certificate verify failed"),
    (True, x509.DNSName("mail.example.mo"), False, "127.0.0.1"),  # another host's certificate
    (True, x509.IPAddress(ipaddress.ip_address("127.0.0.1")), True, None),
])
def test_the_server_certificate_and_name_are_checked(config, tmp_path, clock, monkeypatch, security, trusted, san,
                                                     delivered, error):
    cert_pem, key_pem = certificate(tmp_path, "smtp", san)
    if trusted:  # the system's trusted CAs, as ssl.create_default_context() reads them
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_pem))
    inbox, controller, port = serve(security, cert_pem, key_pem)
    try:
        sent, row = send_one(config, tmp_path, clock, security, port)
    finally:
        controller.stop()
    assert sent == int(delivered) and len(inbox.messages) == int(delivered)
    if error:
        assert row.sent_at is None and error in row.last_error
