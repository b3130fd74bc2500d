"""TLS material for the gRPC server.

On the embedded defaults the server's certificate is issued by this server's own CA on first
start (a P-256 key under ``STATE_DIR/tls``, mode 0600: gRPC needs the TLS key as PEM bytes, so
unlike signing keys it lives in a file), and clients present certificates from the same CA
(``signserver ca issue-client``): mutual TLS out of the box. Configured files are used as they are.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from dataclasses import replace
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from signserver.ca.authority import CertificateAuthority
from signserver.config import TlsConfig
from signserver.errors import ConfigurationError
from signserver.files import write_private_key

log = logging.getLogger(__name__)

SELF_SIGNED_VALIDITY = datetime.timedelta(days=825)
LOOPBACK_NAMES = ("localhost",)
LOOPBACK_ADDRESSES = ("127.0.0.1", "::1")


def _names_for(host: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    dns, addresses = list(LOOPBACK_NAMES), list(LOOPBACK_ADDRESSES)
    try:
        address = ipaddress.ip_address(host)
        if not address.is_unspecified and str(address) not in addresses:
            addresses.append(str(address))
    except ValueError:
        if host not in dns:
            dns.append(host)
    return tuple(dns), tuple(addresses)


def _issued_by(path: Path, issuer: x509.Certificate) -> bool:
    try:
        x509.load_pem_x509_certificate(path.read_bytes()).verify_directly_issued_by(issuer)
        return True
    except Exception:  # missing, unreadable, or signed by someone else: make a new one
        return False


def _follow_issuing_certificate(path: Path, issuing: list[x509.Certificate]) -> None:
    """Send the issuing CA's certificate in force after the server's own: one re-certified for the
    same key (``ca recertify-issuing``) still issued the server's certificate, but the old one
    in the chain would fail clients once it ended."""
    server, *chain = x509.load_pem_x509_certificates(path.read_bytes())
    if chain != issuing:
        path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [server, *issuing]))
        log.info("the server's TLS chain in %s now carries the issuing CA's certificate in force", path)


def ensure_server_certificate(tls: TlsConfig, host: str, ca: CertificateAuthority | None = None) -> None:
    """Make the server's certificate at the default paths when needed: issued by ``ca`` when it is
    ready, else self-signed. Configured (explicit) paths are never written to.
    """
    if tls.explicit:
        return
    issuing = ca.status().issuing if ca is not None else None
    if tls.cert_file.exists() and tls.key_file.exists() and (issuing is None or _issued_by(tls.cert_file, issuing)):
        if issuing is not None:
            _follow_issuing_certificate(tls.cert_file, ca.chain()[:1])
        return
    key = ec.generate_private_key(ec.SECP256R1())
    dns, addresses = _names_for(host)
    if issuing is not None:
        issued = ca.issue_service_certificate("tls-server", "signserver", key.public_key(), "server:bootstrap",
                                              dns_names=dns, ip_addresses=addresses)
        chain = [issued.certificate, *ca.chain()[:1]]
    else:
        chain = [_self_signed(key, dns, addresses)]
    write_private_key(tls.key_file, key)
    tls.cert_file.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    log.info("made the server's TLS certificate %s (%s) for %s", tls.cert_file,
             "issued by this CA" if issuing is not None else "self-signed", ", ".join(dns + addresses))


def _self_signed(key, dns: tuple[str, ...], addresses: tuple[str, ...]) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signserver (self-signed)")])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + SELF_SIGNED_VALIDITY)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))


def _uses_own_client_ca(tls: TlsConfig) -> bool:
    return not tls.explicit and tls.mutual and tls.client_ca_file is None


def with_client_ca(tls: TlsConfig, ca: CertificateAuthority, state_dir: Path) -> TlsConfig:
    """On the defaults with ``tls.mutual``, write this server's CA bundle for client certificates
    and return the configuration that trusts it."""
    if not _uses_own_client_ca(tls):
        return tls
    path = state_dir / "tls" / "client-ca.pem"
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in ca.chain()))
    return replace(tls, client_ca_file=path)


def client_ca_config(tls: TlsConfig, state_dir: Path) -> TlsConfig:
    """The configuration that trusts the bundle :func:`with_client_ca` wrote, when it applies."""
    path = state_dir / "tls" / "client-ca.pem"
    if _uses_own_client_ca(tls) and path.is_file():
        return replace(tls, client_ca_file=path)
    return tls


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """gRPC credentials from the configured files. With a client CA, every client must present a
    certificate from it (gRPC Python can require client certificates or not ask for them,
    nothing between); the application is then identified by its certificate, or by its API key.

    Raises: ConfigurationError: as :func:`check_server_tls`.
    """
    key, chain, client_ca = check_server_tls(tls)
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def check_server_tls(tls: TlsConfig) -> tuple[bytes, bytes, bytes | None]:
    """The configured key, certificate chain and client CA (None: none), each read and parsed,
    the key checked to be the certificate's. `serve` checks them before any worker starts: gRPC
    given a file it cannot use says only that it could not bind the address, in every worker.

    Raises: ConfigurationError (naming the setting): a file is missing or unreadable, not PEM
    certificates or an unencrypted PEM private key, or a key that is not the certificate's.
    """
    def read(path: Path, setting: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(setting, f"cannot read {path}: {exc.strerror}") from None

    def certificates(data: bytes, path: Path, setting: str) -> list[x509.Certificate]:
        try:
            return x509.load_pem_x509_certificates(data)
        except ValueError:
            raise ConfigurationError(setting, f"{path} holds no PEM certificate") from None

    key_pem, chain = read(tls.key_file, "tls.key_file"), read(tls.cert_file, "tls.cert_file")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigurationError("tls.key_file", f"{tls.key_file} is not an unencrypted PEM private key") from None
    certificate = certificates(chain, tls.cert_file, "tls.cert_file")[0]
    if key.public_key() != certificate.public_key():
        raise ConfigurationError("tls.key_file", f"{tls.key_file} is not the key of the certificate in "
                                                 f"{tls.cert_file}")
    client_ca = None
    if tls.client_ca_file:
        client_ca = read(tls.client_ca_file, "tls.client_ca_file")
        certificates(client_ca, tls.client_ca_file, "tls.client_ca_file")
    return key_pem, chain, client_ca
