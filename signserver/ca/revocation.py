"""Revocation status publishing: CRLs and OCSP responses, both signed in the HSM."""

from __future__ import annotations

import datetime
import logging
from typing import Callable

from asn1crypto import core, keys
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import ocsp
from sqlalchemy import Connection, insert, select, update

from signserver.ca.builder import authority_key_identifier, signature_hash
from signserver.ca.ocsp_answers import OcspAnswers
from signserver.ca.repository import get_certificate, revoked_entries
from signserver.clock import epoch_seconds, from_epoch
from signserver.der_encoding import echoed_in_der
from signserver.errors import InvalidArgument, NotFound, RateLimited
from signserver.store.schema import authorities, crls

log = logging.getLogger(__name__)

MAX_NONCE_OCTETS = 128  # RFC 9654: longer nonces are refused, so a response cannot be made to carry a payload
MAX_CERTIFICATES = 32  # in one request (RFC 6960 allows several); each costs a look-up, the signature is one
# The CertID hash algorithms answered, by asn1crypto's name: MD5 and the unknown are malformed.
HASHES = {"sha1": hashes.SHA1(), "sha224": hashes.SHA224(), "sha256": hashes.SHA256(), "sha384": hashes.SHA384(),
          "sha512": hashes.SHA512()}
REASONS = {flag.value: flag for flag in x509.ReasonFlags if flag not in (x509.ReasonFlags.remove_from_crl,)}
# Reasons read in stored revocations but not given to new ones: a hold could never be released (no
# removeFromCRL is published), and aACompromise concerns attribute authorities.
NOT_OFFERED = {x509.ReasonFlags.certificate_hold.value: "a hold could never be released (this CA publishes no "
                                                        "removeFromCRL): revoke with another reason",
               x509.ReasonFlags.aa_compromise.value: "it is for attribute authorities' certificates"}
REVOCATION_REASONS = {name: flag for name, flag in REASONS.items() if name not in NOT_OFFERED}


def check_revocation_reason(name: str) -> None:
    """Whether ``name`` may be given to a new revocation (REVOCATION_REASONS).

    Raises: ValueError: an unknown reason, or one not offered (NOT_OFFERED says why).
    """
    if name in NOT_OFFERED:
        raise ValueError(f"revocation reason {name!r} is not offered: {NOT_OFFERED[name]}; one of "
                         f"{', '.join(REVOCATION_REASONS)}")
    parse_reason(name)


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
    # Locked until the caller commits: two nodes revoking at once must not both sign number N+1,
    # nor two nodes setting the CA up both sign number 1, when there is no CRL row yet to lock:
    # the authority's own row, which is there before its first CRL, is locked first.
    conn.execute(select(authorities.c.name).where(authorities.c.name == authority).with_for_update())
    last = conn.execute(select(crls.c.number).where(crls.c.authority == authority).with_for_update()).scalar()
    number = (last or 0) + 1
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer.subject).last_update(now).next_update(now + validity)
               .add_extension(x509.CRLNumber(number), critical=False)
               .add_extension(authority_key_identifier(issuer), critical=False))
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
                  responder_key, now: datetime.datetime, validity: datetime.timedelta,
                  answers: OcspAnswers | None = None, take_signature: Callable[[], float] | None = None) -> bytes:
    """An RFC 6960 response for the certificates in the request: for each, in the request's order,
    good, revoked or unknown, under the CertID it was asked with; signed by the delegated
    responder; the request's nonce echoed. A request that cannot be parsed or asks for what this
    responder does not do is answered ``malformedRequest``, one about another issuer
    ``unauthorized``: client input never raises. Without a nonce, an answer ``answers`` kept for
    the same CertIDs with the same statuses is given again (see signserver/ca/ocsp_answers.py).

    ``take_signature`` is asked before each new signature (never for a kept answer or an
    unsigned refusal): 0.0 to sign, else the seconds until the client may have one (as
    TokenBuckets.take). Refused, a request with a nonce gets the answer kept for its question,
    which carries none, when there is one: RFC 5019 2.2.1 has a responder that cannot answer a
    nonce give "the most complete response it can", without it, and RFC 5019 4 has clients
    judge such an answer by its time instead of refusing it.

    Raises: RateLimited (``take_signature`` refused, and no answer is kept); HsmError (signing
    the response).
    """
    parsed = parse_ocsp_request(request_der)
    if parsed is None:
        return unsuccessful_ocsp_response(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    cert_ids, nonce = parsed
    if not all(_is_of(cert_id, issuer) for cert_id in cert_ids):
        return unsuccessful_ocsp_response(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    now = now.replace(microsecond=0)  # RFC 5019 2.2.4: GeneralizedTime without fractions of a second
    statuses = [_status(conn, cert_id["serial_number"].native, now) for cert_id in cert_ids]
    question = (responder.fingerprint(hashes.SHA256()),
                *((cert_id.dump(), status.dump()) for cert_id, status in zip(cert_ids, statuses)))
    if nonce is None and answers is not None:
        kept = answers.find(question, now)
        if kept is not None:
            return kept
    wait = take_signature() if take_signature is not None else 0.0
    if wait:
        # A client that insists on its nonce fails on this answer as it would on a refusal; every
        # other one (most relying parties) is better served by a current answer than by none.
        kept = answers.find(question, now) if answers is not None else None
        if kept is not None:
            return kept
        raise RateLimited("too many OCSP requests that need a new signature from this client; try again shortly",
                          retry_seconds=wait)
    responses = [{"cert_id": cert_id, "cert_status": status, "this_update": now, "next_update": now + validity}
                 for cert_id, status in zip(cert_ids, statuses)]
    data = {"responder_id": asn1_ocsp.ResponderId(name="by_key", value=_key_hash(hashes.SHA1(), responder)),
            "produced_at": now, "responses": responses}
    if nonce is not None:
        data["response_extensions"] = [{"extn_id": "nonce", "critical": False, "extn_value": nonce}]
    tbs = asn1_ocsp.ResponseData(data)
    # The responder key's own scheme (an HSM key presented as a ``cryptography`` key): ECDSA, or
    # PKCS#1 v1.5 for an RSA responder on a token without EC (see KeyAlgorithm.own_signature_algorithm).
    signature_algorithm, signature = _sign(responder_key, tbs.dump())
    basic = asn1_ocsp.BasicOCSPResponse({
        "tbs_response_data": tbs, "signature_algorithm": {"algorithm": signature_algorithm}, "signature": signature,
        "certs": [asn1_x509.Certificate.load(responder.public_bytes(Encoding.DER))]})
    answer = asn1_ocsp.OCSPResponse({"response_status": "successful", "response_bytes": {
        "response_type": "basic_ocsp_response", "response": basic}}).dump()
    if nonce is None and answers is not None:
        answers.keep(question, answer, now)
    return answer


def unsuccessful_ocsp_response(status: ocsp.OCSPResponseStatus) -> bytes:
    """A DER OCSPResponse that carries only an error status (no signature, as RFC 6960 says)."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(Encoding.DER)


def parse_ocsp_request(request_der: bytes) -> tuple[list[asn1_ocsp.CertId], bytes | None] | None:
    """The CertIDs asked about (in the request's order) and the request's nonce; None when the
    responder must answer ``malformedRequest``: not DER of an OCSPRequest, no certificate or more
    than MAX_CERTIFICATES asked for, a hash algorithm it does not know or hashes not of its size,
    a negative serial number, a CertID holding an element it does not define, a critical
    extension it does not understand (RFC 6960 4.4), or a nonce that is empty or longer than 128
    octets (RFC 9654)."""
    try:
        request = asn1_ocsp.OCSPRequest.load(request_der, strict=True)  # strict: no trailing bytes
        request.native  # force a full parse: asn1crypto parses lazily
    # asn1crypto reports hostile DER with ValueError, TypeError, KeyError, IndexError,
    # AttributeError or OverflowError, depending on where the parse breaks: all mean "not an
    # OCSPRequest", and a client must never make the responder fail.
    except Exception:  # noqa: BLE001
        return None
    tbs = request["tbs_request"]
    if not 1 <= len(tbs["request_list"]) <= MAX_CERTIFICATES:
        return None
    cert_ids = []
    for single in tbs["request_list"]:
        cert_id = single["req_cert"]
        algorithm = HASHES.get(cert_id["hash_algorithm"]["algorithm"].native)
        if algorithm is None or cert_id["hash_algorithm"]["parameters"].native is not None:
            return None
        size = algorithm.digest_size
        if len(cert_id["issuer_name_hash"].native) != size or len(cert_id["issuer_key_hash"].native) != size:
            return None
        if cert_id["serial_number"].native < 0:  # RFC 5280 serials are positive
            return None
        if any(extension["critical"].native for extension in single["single_request_extensions"]):
            return None  # none is understood here
        try:
            cert_ids.append(echoed_in_der(cert_id))
        except InvalidArgument:  # an element CertID does not define
            return None
    nonce = None
    for extension in tbs["request_extensions"]:
        if extension["extn_id"].native == "nonce":
            nonce = extension["extn_value"].parsed.native
            if not 1 <= len(nonce) <= MAX_NONCE_OCTETS:
                return None
        elif extension["critical"].native:
            return None
    return cert_ids, nonce


def _is_of(cert_id: asn1_ocsp.CertId, issuer: x509.Certificate) -> bool:
    """Whether ``cert_id`` names a certificate of ``issuer``."""
    algorithm = HASHES[cert_id["hash_algorithm"]["algorithm"].native]
    return (cert_id["issuer_name_hash"].native == _digest(algorithm, issuer.subject.public_bytes())
            and cert_id["issuer_key_hash"].native == _key_hash(algorithm, issuer))


def _status(conn: Connection, serial: int, now: datetime.datetime) -> asn1_ocsp.CertStatus:
    """good, revoked (with its time and reason) or unknown: what this CA knows of ``serial``."""
    try:
        issued = get_certificate(conn, format(serial, "x"), now)
    except NotFound:
        return asn1_ocsp.CertStatus(name="unknown", value=core.Null())
    if issued.status != "revoked":
        return asn1_ocsp.CertStatus(name="good", value=core.Null())
    revoked = {"revocation_time": issued.revoked_at}
    if issued.revocation_reason:
        revoked["revocation_reason"] = parse_reason(issued.revocation_reason).name  # asn1crypto's names
    return asn1_ocsp.CertStatus(name="revoked", value=revoked)


def _sign(key, data: bytes) -> tuple[str, bytes]:
    """The signature algorithm's name (asn1crypto's) and ``key``'s signature of ``data``."""
    digest = signature_hash(key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"{digest.name}_ecdsa", key.sign(data, ec.ECDSA(digest))
    if isinstance(key, rsa.RSAPrivateKey):
        return f"{digest.name}_rsa", key.sign(data, padding.PKCS1v15(), digest)
    return "ed25519", key.sign(data)


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


def _key_hash(algorithm: hashes.HashAlgorithm, issuer: x509.Certificate) -> bytes:
    """Hash of the issuer's public key BIT STRING contents, as RFC 6960 defines issuerKeyHash."""
    spki = keys.PublicKeyInfo.load(issuer.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    return _digest(algorithm, spki["public_key"].contents[1:])  # without the unused-bits byte
