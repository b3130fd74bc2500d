"""The CA's answers over HTTP, apart from any HTTP machinery: plain functions the routes of
:mod:`signserver.http.ca_app` call, each returning the document to send.

    GET  /crl/issuing.crl, /crl/root.crl        application/pkix-crl
    GET  /ca/issuing.crt, /ca/root.crt          application/pkix-cert
    POST /ocsp                                  application/ocsp-request -> ocsp-response
    GET  /ocsp/<base64 of the DER request>      (RFC 6960 appendix A.1)
    POST /tsa                                   application/timestamp-query -> timestamp-reply (RFC 3161)
    GET  /cps                                   the certificate policies, as text

Everything served is public and signed; nothing changes. Every function blocks (a CRL, an OCSP
response or a time-stamp may be signed in the HSM): the routes run them in a pool's thread.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email.utils
import hashlib
import urllib.parse
from dataclasses import dataclass
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp as x509_ocsp

from signserver.service import SignService

CRL_AUTHORITIES = ("issuing", "root")
CA_CERTIFICATES = ("issuing", "root")  # in the order of the CA's chain


@dataclass(frozen=True)
class Document:
    """What to send: the bytes, their media type and any other header fields."""

    body: bytes
    media_type: str
    headers: tuple[tuple[str, str], ...] = ()


def crl(service: SignService, authority: str) -> Document:
    """The latest CRL of ``authority`` (one of CRL_AUTHORITIES), with the HTTP caching headers
    RFC 5019 6.2 gives an OCSP response, from its thisUpdate and nextUpdate: a relying party, an
    HTTP cache or a CDN keeps it until then and revalidates it by its ETag (a revocation signs a
    new CRL at once, which a conditional GET then fetches).

    Raises: NotFound: none was published yet.
    """
    der = service.ca.crl(authority)
    published = x509.load_der_x509_crl(der)
    next_update = published.next_update_utc
    headers = (_caching(der, published.last_update_utc, next_update, service.clock.now())
               if next_update is not None else ())  # this CA's CRLs always carry one
    return Document(der, "application/pkix-crl", headers)


def ca_certificate(service: SignService, which: str) -> Document:
    """The CA certificate ``which`` (one of CA_CERTIFICATES), DER.

    Raises: NotFound: the CA is not set up.
    """
    return Document(service.ca.chain()[CA_CERTIFICATES.index(which)].public_bytes(Encoding.DER),
                    "application/pkix-cert")


def ocsp(service: SignService, request_der: bytes, cacheable: bool = False,
         take_signature: Callable[[], float] | None = None) -> Document:
    """The OCSP response to ``request_der`` (a malformed request gets ``malformedRequest``).
    ``cacheable`` (a GET): a successful response carries the HTTP caching headers of RFC 5019
    6.2, fresh until its nextUpdate, so that HTTP caches and CDNs can serve it.
    ``take_signature``: the client's allowance of new signatures (see revocation.ocsp_response).

    Raises: NotFound: the CA is not set up; RateLimited: the client has no signature left and
    no answer is kept for its question; HsmError: the responder's key could not sign.
    """
    der = service.ca.ocsp(request_der, take_signature)
    return Document(der, "application/ocsp-response", _ocsp_caching(der, service.clock.now()) if cacheable else ())


def _ocsp_caching(der: bytes, now: datetime.datetime) -> tuple[tuple[str, str], ...]:
    """RFC 5019 6.2's header fields for a successful response; none for an error status (which
    says nothing about a certificate and must not be kept)."""
    response = x509_ocsp.load_der_ocsp_response(der)
    if response.response_status is not x509_ocsp.OCSPResponseStatus.SUCCESSFUL:
        return ()
    singles = list(response.responses)
    this_update = max(single.this_update_utc for single in singles)
    next_update = min(single.next_update_utc for single in singles)  # all carry one (ocsp_response)
    return _caching(der, this_update, next_update, now)


def _caching(der: bytes, this_update: datetime.datetime, next_update: datetime.datetime,
             now: datetime.datetime) -> tuple[tuple[str, str], ...]:
    """RFC 5019 6.2's header fields for a signed document valid from ``this_update`` to
    ``next_update``: fresh in a cache until its nextUpdate, never after it."""
    max_age = max(0, int((next_update - now).total_seconds()))
    return (("Last-Modified", email.utils.format_datetime(this_update, usegmt=True)),
            ("Expires", email.utils.format_datetime(next_update, usegmt=True)),
            ("ETag", f'"{hashlib.sha1(der).hexdigest()}"'),
            ("Cache-Control", f"max-age={max_age}, public, no-transform, must-revalidate"))


def ocsp_request_from_path(encoded: str) -> bytes:
    """The DER request of a GET: base64 per RFC 6960, URL-encoded; the URL-safe alphabet is
    accepted too. Undecodable text gives b"", which is answered as a malformed request."""
    encoded = urllib.parse.unquote(encoded).replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return b""


def time_stamp(service: SignService, query_der: bytes) -> Document:
    """The RFC 3161 reply to ``query_der`` (a malformed query gets a rejection).

    Raises: NotFound: the CA is not set up; HsmError: the TSA's key could not sign.
    """
    return Document(service.pades.tsa.respond(query_der), "application/timestamp-reply")


def policy_statement(service: SignService) -> Document:
    """The certificate policies of the CA's profiles, as text."""
    lines = [f"{service.config.ca.name}: certificate policies", ""]
    for profile in service.ca.profiles():
        lines.append(f"{profile.policy_oid}  {profile.name}: {profile.title}")
    return Document(("\n".join(lines) + "\n").encode("utf-8"), "text/plain; charset=utf-8")
