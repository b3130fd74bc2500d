"""Which client certificate identifies a caller: the TLS peer's own, or, when that peer is one of
the configured load balancers (``[tls] balancer_cert_sha256``), the certificate the balancer
verified against this CA and forwards in the ``x-client-cert`` header.

Behind a balancer that terminates TLS, every node's TLS peer is the balancer: the caller's own
certificate reaches the node only as the header. A header is believed from a balancer alone
(checked by its certificate, which TLS proved it holds): from anyone else it is refused, so that a
misconfigured fingerprint shows at once rather than naming the balancer as the caller. The
balancer's own certificate never identifies a caller.

Both fronts that take client certificates use it: gRPC (the ``x-client-cert`` metadata) and the CSC
API over HTTPS (the ``X-Client-Cert`` header; HTTP header names are case-insensitive).

Forms accepted: nginx's ``$ssl_client_escaped_cert`` (URL-encoded PEM) and HAProxy's
``%[ssl_c_der,base64]`` (base64 DER). The certificate then goes through the same checks as one
TLS presented: its dates, this CA's records (revocation), its registration.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Collection
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from signserver.ca.client_status import ClientCertificate, presented
from signserver.errors import Unauthenticated

FORWARDED_CERTIFICATE_HEADER = "x-client-cert"
# A certificate of a few kilobytes at most; anything far longer is not one.
MAX_FORWARDED_LENGTH = 16_384


@functools.lru_cache(maxsize=1024)
def forwarded_pem(value: str) -> bytes:
    """The PEM of a forwarded certificate (URL-encoded PEM, or base64 DER). Every call from one
    client forwards the same value: it is decoded once.

    Raises: Unauthenticated: it is not a certificate in either form.
    """
    unreadable = Unauthenticated("the client certificate the load balancer forwarded cannot be read")
    if len(value) > MAX_FORWARDED_LENGTH:
        raise unreadable
    text = unquote(value).strip()
    try:
        if text.startswith("-----BEGIN CERTIFICATE-----"):
            certificate = x509.load_pem_x509_certificate(text.encode("ascii"))
        else:
            certificate = x509.load_der_x509_certificate(base64.b64decode(text, validate=True))
    except (ValueError, UnicodeEncodeError, binascii.Error):
        raise unreadable from None
    return certificate.public_bytes(Encoding.PEM)


def balancer_certificate(peer_pem: bytes | None, balancers: Collection[str]) -> ClientCertificate | None:
    """The TLS peer's certificate, parsed, when the peer is one of the configured balancers
    (``balancers``: the SHA-256 of their certificates); None otherwise. Each front checks it is
    valid now (``ClientCertificateStatus``) before it believes what the balancer forwards: a
    balancer whose certificate was revoked vouches for no caller any more.

    Raises: Unauthenticated: the peer's certificate cannot be read.
    """
    if not peer_pem or not balancers:
        return None
    peer = presented(peer_pem)
    return peer if peer.sha256 in balancers else None


def caller_certificate_pem(peer_pem: bytes | None, forwarded: Collection[str],
                           balancers: Collection[str]) -> bytes | None:
    """The PEM of the certificate that identifies the caller (None: none does), given the TLS
    peer's certificate, the values of the ``x-client-cert`` header and the balancers' fingerprints.

    Raises: Unauthenticated: the header came from a peer that is not a configured balancer, came
    more than once, or is not a certificate; the peer's certificate cannot be read.
    """
    forwarded = [value for value in forwarded if value]
    from_balancer = balancer_certificate(peer_pem, balancers) is not None
    if not forwarded:
        return None if from_balancer else peer_pem
    if not from_balancer:
        raise Unauthenticated(f"a client certificate in {FORWARDED_CERTIFICATE_HEADER} is accepted only from the "
                              f"configured load balancer ([tls] balancer_cert_sha256)")
    if len(forwarded) > 1:
        raise Unauthenticated(f"the load balancer forwarded {len(forwarded)} client certificates; one at most")
    return forwarded_pem(forwarded[0])
