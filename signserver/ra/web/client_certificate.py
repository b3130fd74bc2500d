"""Operators signing in with an RA client certificate.

With ``ra.operator_client_ca`` (and the RA served over TLS: ``ra.tls_cert``, ``ra.tls_key``), the
RA's TLS asks every browser for a client certificate, optional and verified against that CA, and
hands a verified one to each request of the connection as ``request.state.client_certificate_der``
(uvicorn has no place for it: :class:`ClientCertificateProtocol` puts it there). The operators'
sign-in page then asks :func:`operator_from_certificate` whom it names, and, before it signs the
operator in, :func:`certificate_in_force` whether the core still holds the certificate valid.

An RA client certificate is recognised the way the core's CA marks it: the ``client-ra`` profile,
whose certificates carry the extended key usage clientAuth and the profile's certificate policy.
That policy's identifier follows the CA's settings (``ca.policy_oid_arc``, a profile's own
``policy_oid``), so it is taken from the RA's own client certificate, which the same CA issued
with the same profile (``signserver ca issue-client --role ra``): the certificates of applications
(client-asp) and of holders (standard certificates also allow clientAuth) carry other policies.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from uvicorn.protocols.http.h11_impl import H11Protocol

from signserver.client import NotFound, SignServerClientError
from signserver.ra.errors import SettingsError, core_error, core_unavailable
from signserver.ra.settings import RaSettings

log = logging.getLogger(__name__)

STATE_KEY = "client_certificate_der"
RA_PROFILE = "client-ra"  # the core's name of the RA client certificates' profile


class ClientCertificateProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, handing the client certificate TLS verified on the connection
    to each request of it (``scope["state"]["client_certificate_der"]``, DER)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            # Per connection: each request's state starts as a copy of this mapping.
            self.app_state = {**self.app_state, STATE_KEY: der}


def http_protocol(settings: RaSettings) -> str | type[H11Protocol]:
    """What to give uvicorn.Config(http=...): "h11" when no operator client CA is set, else
    :class:`ClientCertificateProtocol`."""
    return "h11" if settings.operator_client_ca is None else ClientCertificateProtocol


def tls_options(settings: RaSettings) -> dict[str, Any]:
    """The TLS keyword arguments of uvicorn.Config: none without ra.tls_cert; the certificate and
    key; and, with ra.operator_client_ca, an optional client certificate verified against it.

    Raises: SettingsError: tls_cert without tls_key (or the reverse), a listen beyond loopback
    without them, or operator_client_ca without TLS (a browser sends a certificate only over TLS)
    or not readable.
    """
    tls = settings.api_tls
    if tls is None:
        if settings.operator_client_ca is not None:
            raise SettingsError("ra.operator_client_ca: operators sign in with a client certificate over TLS only: "
                                "set ra.tls_cert and ra.tls_key too, or remove ra.operator_client_ca")
        return {}
    options: dict[str, Any] = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])}
    if settings.operator_client_ca is not None:
        if not Path(settings.operator_client_ca).is_file():
            raise SettingsError(f"ra.operator_client_ca: cannot read {settings.operator_client_ca}; give the PEM "
                                "file of the CA that issues the RA certificates (the core's ca.pem)")
        options.update(ssl_cert_reqs=ssl.CERT_OPTIONAL, ssl_ca_certs=str(settings.operator_client_ca))
    return options


def client_certificate_der(scope_or_request) -> bytes | None:
    """The verified client certificate of a request (a Starlette Request or an ASGI scope), or None."""
    scope = getattr(scope_or_request, "scope", scope_or_request)
    state = scope.get("state") or {}
    der = state.get(STATE_KEY)
    return der if isinstance(der, bytes) and der else None


def operator_from_certificate(der: bytes | None, settings: RaSettings) -> str | None:
    """The operator a verified client certificate names: its common name, when it is an RA
    client certificate (clientAuth, and the policy of the RA's own client certificate) and the
    name is allowed (one of ra.operators, when set); else None. TLS has checked the chain to
    ra.operator_client_ca and the dates; the certificate is parsed again here, never trusted
    further than that.
    """
    if not der or settings.operator_client_ca is None:
        return None
    try:
        certificate = x509.load_der_x509_certificate(der)
        usages = certificate.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
        policies = {p.policy_identifier.dotted_string for p in
                    certificate.extensions.get_extension_for_oid(ExtensionOID.CERTIFICATE_POLICIES).value}
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        constraints = certificate.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages or constraints.ca:
        return None
    ra_policies = _ra_policies(settings)
    if not ra_policies or not policies & ra_policies:
        return None
    name = str(names[0].value).strip() if names else ""
    if not name or (settings.operators and name not in settings.operators):
        return None
    return name


def certificate_in_force(der: bytes, certificates) -> bool:
    """Whether the core (``certificates``: a CertificateClient, or the RA's CoreConnection) holds
    this very certificate as a valid RA client certificate: issued with the client-ra profile, not
    revoked, not expired. TLS checks the chain and the dates but knows nothing of revocation: a
    sign-in with a certificate asks the core too.

    Raises: CoreUnavailable: the core did not answer (the sign-in cannot be decided now).
    """
    try:
        serial = format(x509.load_der_x509_certificate(der).serial_number, "x")
        record = certificates.get_certificate(serial)
    except ValueError:
        return False
    except NotFound:
        return False
    except SignServerClientError as exc:
        if core_unavailable(exc):
            raise core_error(exc) from None
        log.debug("the core refused to show certificate %s: %s", serial, exc.code)
        return False
    return record.profile == RA_PROFILE and record.status == "valid" and record.certificate_der == der


def _ra_policies(settings: RaSettings) -> frozenset[str]:
    """The certificate policies of the RA's own client certificate: those of the client-ra profile."""
    path = settings.client_files[0]
    try:
        own = x509.load_pem_x509_certificate(Path(path).read_bytes())
        return frozenset(p.policy_identifier.dotted_string for p in
                         own.extensions.get_extension_for_oid(ExtensionOID.CERTIFICATE_POLICIES).value)
    except (OSError, ValueError, x509.ExtensionNotFound) as exc:
        log.warning("operators cannot sign in with a certificate: the RA's own client certificate %s cannot "
                    "be read (%s); it tells which certificates are RA certificates", path, type(exc).__name__)
        return frozenset()
