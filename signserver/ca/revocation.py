"""Revocation status publishing: CRLs and OCSP responses, both signed in the HSM."""

from __future__ import annotations

import datetime
import logging

from asn1crypto import keys
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import ocsp
from sqlalchemy import Connection, insert, select, update

from signserver.ca.builder import signature_hash
from signserver.ca.repository import get_certificate, revoked_entries
from signserver.clock import epoch_seconds, from_epoch
from signserver.errors import NotFound
from signserver.store.schema import crls

log = logging.getLogger(__name__)

MAX_NONCE_OCTETS = 128  # RFC 9654: longer nonces are refused, so a response cannot be made to carry a payload
REASONS = {flag.value: flag for flag in x509.ReasonFlags if flag not in (x509.ReasonFlags.remove_from_crl,)}


def parse_reason(name: str) -> x509.ReasonFlags:
    """An RFC 5280 reason by its name (``keyCompromise``, ``superseded``, ...).

    Raises: ValueError: unknown reason.
    """
    if name not in REASONS:
        raise ValueError(f"unknown revocation reason {name!r}; one of {', '.join(REASONS)}")
    return REASONS[name]


def build_crl(conn: Connection, authority: str, issuer: x509.Certificate, issuer_key, now: datetime.datetime,
              validity: datetime.timedelta, include_revoked: bool) -> bytes:
    """Sign the next CRL of ``authority`` (its number one above the last) and store it."""
    # Locked until the caller commits: two nodes revoking at once must not both sign number N+1.
    last = conn.execute(select(crls.c.number).where(crls.c.authority == authority).with_for_update()).scalar()
    number = (last or 0) + 1
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer.subject).last_update(now).next_update(now + validity)
               .add_extension(x509.CRLNumber(number), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),
                              critical=False))
    for entry in (revoked_entries(conn) if include_revoked else ()):
        revoked = (x509.RevokedCertificateBuilder().serial_number(int(entry.serial, 16))
                   .revocation_date(from_epoch(entry.revoked_at)))
        if entry.revocation_reason and entry.revocation_reason != "unspecified":
            revoked = revoked.add_extension(x509.CRLReason(parse_reason(entry.revocation_reason)), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    der = builder.sign(issuer_key, signature_hash(issuer_key)).public_bytes(Encoding.DER)
    values = dict(number=number, this_update=epoch_seconds(now), next_update=epoch_seconds(now + validity), der=der)
    if last is None:
        conn.execute(insert(crls).values(authority=authority, **values))
    else:
        conn.execute(update(crls).where(crls.c.authority == authority).values(**values))
    log.info("signed CRL %d of the %s CA", number, authority)
    return der


def stored_crl(conn: Connection, authority: str):
    """The latest CRL row (number, this_update, next_update, der), or None."""
    return conn.execute(select(crls).where(crls.c.authority == authority)).first()


def ocsp_response(conn: Connection, request_der: bytes, issuer: x509.Certificate, responder: x509.Certificate,
                  responder_key, now: datetime.datetime, validity: datetime.timedelta) -> bytes:
    """An RFC 6960 response for the certificate in the request: good, revoked or unknown, signed
    by the delegated responder; the request's nonce is echoed. A request that cannot be parsed or
    asks for what this responder does not do is answered ``malformedRequest``, one about another
    issuer ``unauthorized``: client input never raises.

    Raises: HsmError (signing the response).
    """
    parsed = parse_ocsp_request(request_der)
    if parsed is None:
        return unsuccessful_ocsp_response(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    request, algorithm, nonce = parsed
    issuer_name_hash = _digest(algorithm, issuer.subject.public_bytes())
    issuer_key_hash = _key_hash(algorithm, issuer)
    if request.issuer_name_hash != issuer_name_hash or request.issuer_key_hash != issuer_key_hash:
        return unsuccessful_ocsp_response(ocsp.OCSPResponseStatus.UNAUTHORIZED)

    builder = ocsp.OCSPResponseBuilder()
    try:
        issued = get_certificate(conn, format(request.serial_number, "x"), now)
    except NotFound:
        issued = None
    next_update = now + validity
    if issued is None:
        builder = builder.add_response_by_hash(
            issuer_name_hash=issuer_name_hash, issuer_key_hash=issuer_key_hash, serial_number=request.serial_number,
            algorithm=algorithm, cert_status=ocsp.OCSPCertStatus.UNKNOWN, this_update=now, next_update=next_update,
            revocation_time=None, revocation_reason=None)
    else:
        revoked = issued.status == "revoked"
        reason = parse_reason(issued.revocation_reason) if revoked and issued.revocation_reason else None
        builder = builder.add_response(
            cert=issued.certificate, issuer=issuer, algorithm=algorithm,
            cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
            this_update=now, next_update=next_update,
            revocation_time=issued.revoked_at if revoked else None, revocation_reason=reason)
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, responder).certificates([responder])
    if nonce is not None:
        builder = builder.add_extension(nonce, critical=False)
    # The responder key's own scheme (an HSM key presented as a ``cryptography`` key): ECDSA, or
    # PKCS#1 v1.5 for an RSA responder on a token without EC (see KeyAlgorithm.own_signature_algorithm).
    return builder.sign(responder_key, signature_hash(responder_key)).public_bytes(Encoding.DER)


def unsuccessful_ocsp_response(status: ocsp.OCSPResponseStatus) -> bytes:
    """A DER OCSPResponse that carries only an error status (no signature, as RFC 6960 says)."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(Encoding.DER)


def parse_ocsp_request(request_der: bytes) \
        -> tuple[ocsp.OCSPRequest, hashes.HashAlgorithm, x509.OCSPNonce | None] | None:
    """The request, its CertID hash algorithm and its nonce; None when the responder must answer
    ``malformedRequest``: not DER of an OCSPRequest, more than one certificate asked for, a hash
    algorithm it does not know, a negative serial number, a critical extension it does not
    understand (RFC 6960 4.4), or a nonce that is empty or longer than 128 octets (RFC 9654)."""
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        algorithm = request.hash_algorithm
        extensions = list(request.extensions)
    # cryptography says "cannot parse" with ValueError, "more than one request" with
    # NotImplementedError and "unknown hash" with UnsupportedAlgorithm; all are the client's doing.
    except (ValueError, TypeError, NotImplementedError, UnsupportedAlgorithm):
        return None
    if request.serial_number < 0:  # RFC 5280 serials are positive; a response could not carry it
        return None
    nonce = None
    for extension in extensions:
        if isinstance(extension.value, x509.OCSPNonce):
            if not 1 <= len(extension.value.nonce) <= MAX_NONCE_OCTETS:
                return None
            nonce = extension.value
        elif extension.critical:
            return None
    return request, algorithm, nonce


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


def _key_hash(algorithm: hashes.HashAlgorithm, issuer: x509.Certificate) -> bytes:
    """Hash of the issuer's public key BIT STRING contents, as RFC 6960 defines issuerKeyHash."""
    spki = keys.PublicKeyInfo.load(issuer.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    return _digest(algorithm, spki["public_key"].contents[1:])  # without the unused-bits byte
