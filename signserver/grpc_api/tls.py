"""TLS material for the gRPC server.

With no TLS files configured, the server makes its own certificate on first start: a P-256
key and a self-signed certificate for localhost, 127.0.0.1 and ::1 (plus the configured listen
host) under ``STATE_DIR/tls``. gRPC needs the TLS key as PEM bytes, so unlike signing keys it
lives in a file, with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from signserver.config import TlsConfig
from signserver.errors import ConfigurationError

log = logging.getLogger(__name__)

SELF_SIGNED_VALIDITY = datetime.timedelta(days=825)


def ensure_server_certificate(tls: TlsConfig, host: str, now: datetime.datetime | None = None) -> None:
    """Create a self-signed server certificate at the default paths when none exists.

    Configured (explicit) paths are never written to.
    """
    if tls.explicit or (tls.cert_file.exists() and tls.key_file.exists()):
        return
    now = now or datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    try:
        address = ipaddress.ip_address(host)
        if not address.is_unspecified and x509.IPAddress(address) not in names:
            names.append(x509.IPAddress(address))
    except ValueError:
        if host != "localhost":
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signserver (self-signed)")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + SELF_SIGNED_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    tls.key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(tls.key_file, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    tls.cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    log.info("made a self-signed TLS certificate %s for %s", tls.cert_file,
             ", ".join(str(n.value) for n in names))


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """gRPC credentials from the configured files. With a client CA configured, every client must
    present a certificate from that CA (gRPC Python can require client certificates or not ask
    for them, nothing between); the application is then identified by its certificate, or by
    its API key when it sends one.

    Raises: ConfigurationError: a file is missing or unreadable.
    """
    def read(path: Path, key: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(key, f"cannot read {path}: {exc.strerror}") from None

    pair = (read(tls.key_file, "tls.key_file"), read(tls.cert_file, "tls.cert_file"))
    client_ca = read(tls.client_ca_file, "tls.client_ca_file") if tls.client_ca_file else None
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)
