"""TimeStampAuthority: RFC 3161 time-stamp tokens signed by a key in the HSM.

Served over HTTP (``application/timestamp-query``) and used in-process for PAdES B-T and above
through :class:`InProcessTimeStamper`.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import urllib.request

from asn1crypto import cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from pyhanko.sign.timestamps.api import TimeStamper

from signserver.clock import Clock
from signserver.der_encoding import echoed_in_der
from signserver.errors import InvalidArgument, UpstreamUnavailable
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.hsm.keystore import HsmKeyStore
from signserver.pades.cms_signer import HsmCmsSigner

# This TSA's policy identifier: under the CA's policy arc (ca.policy_oid_arc), beside the
# certificate policies, so that every decoder reads it. A request may still name the identifier
# of earlier versions, whose 128-bit arc some decoders cannot read.
TSA_POLICY_NUMBER = 20
EARLIER_TSA_POLICY = "2.25.201587617087394208425939216924211183661"


def tsa_policy(policy_oid_arc: str) -> str:
    """The TSA's policy identifier under the CA's arc."""
    return f"{policy_oid_arc}.{TSA_POLICY_NUMBER}"
DIGESTS = {"sha256": 32, "sha384": 48, "sha512": 64}


def _digest_name(algorithm: str) -> str:
    """``sha256`` as people write it: SHA-256."""
    return algorithm.upper().replace("SHA", "SHA-") if algorithm in DIGESTS else algorithm


class _Rejection(core.Sequence):
    """A TimeStampResp without a token (asn1crypto's class insists on one)."""

    _fields = [("status", tsp.PKIStatusInfo)]


def _rejection(text: str, failure: str) -> _Rejection:
    return _Rejection({"status": tsp.PKIStatusInfo({
        "status": "rejection", "status_string": [text], "fail_info": tsp.PKIFailureInfo({failure})})})


class TimeStampAuthority:
    def __init__(self, keys: HsmKeyStore, ca, clock: Clock):
        self._keys = keys
        self._ca = ca
        self._clock = clock
        self.policy = tsa_policy(ca.config.policy_oid_arc)

    def certificate(self) -> x509.Certificate:
        """The TSA's current certificate. Raises: NotFound (CA not initialised), HsmError."""
        return self._ca.service_key("tsa")[1]

    def _signer(self) -> HsmCmsSigner:
        key_id, certificate = self._ca.service_key("tsa")
        # The key's own algorithm, read from its certificate: the TSA key is RSA on a token
        # without EC, and one made under an earlier setting keeps signing as what it is.
        return HsmCmsSigner(KeyAlgorithm.of_public_key(certificate.public_key()), certificate, self._ca.chain(),
                            sign_digest=functools.partial(self._keys.sign_digest, key_id))

    def respond(self, request_der: bytes) -> bytes:
        """A DER TimeStampResp for a DER TimeStampReq; malformed or unsupported requests are
        answered with a rejection, as RFC 3161 asks, never with an exception.

        Raises: NotFound (CA not initialised), HsmError (signing the token).
        """
        return self.respond_to(parse_request(request_der)).dump()

    def respond_to(self, request: tsp.TimeStampReq | _Rejection) -> tsp.TimeStampResp | _Rejection:
        """A time-stamp token for ``request``, or a rejection for one this TSA does not grant.

        Raises: NotFound (CA not initialised), HsmError (signing the token).
        """
        if isinstance(request, _Rejection):  # from parsing
            return request
        refusal = _refusal(request, self.policy)
        if refusal is not None:
            return refusal
        try:
            imprint = echoed_in_der(request["message_imprint"])
        except InvalidArgument as refused:
            return _rejection(str(refused), "bad_data_format")
        signer = self._signer()
        info = {
            # RFC 3161 2.4.2: a token states the policy the request asked for (one _refusal accepted).
            "version": "v1", "policy": request["req_policy"].native or self.policy, "message_imprint": imprint,
            "serial_number": secrets.randbits(127), "gen_time": self._clock.now(), "accuracy": {"seconds": 1},
            "tsa": asn1_x509.GeneralName(name="directory_name", value=signer.signing_cert.subject),
        }
        if request["nonce"].native is not None:
            info["nonce"] = request["nonce"].native  # its value, encoded anew (see echoed_in_der)
        content = cms.EncapsulatedContentInfo({"content_type": "tst_info",
                                               "content": cms.ParsableOctetString(tsp.TSTInfo(info).dump())})
        # Called from a worker thread (or the HTTP server's), which has no event loop of its own.
        token = asyncio.run(signer.async_sign_general_data(content, "sha256", detached=False, use_cades=True))
        if not request["cert_req"].native:
            token = _without_certificates(token)
        return tsp.TimeStampResp({"status": tsp.PKIStatusInfo({"status": "granted"}), "time_stamp_token": token})


def _without_certificates(token: cms.ContentInfo) -> cms.ContentInfo:
    """``token`` without its certificates: RFC 3161 2.4.1 says the field MUST NOT be present
    when certReq is false or missing. It is not signed, so the signature stays valid."""
    signed = token["content"]
    return cms.ContentInfo({"content_type": "signed_data", "content": cms.SignedData({
        name: signed[name] for name in ("version", "digest_algorithms", "encap_content_info", "signer_infos")})})


def parse_request(request_der: bytes) -> tsp.TimeStampReq | _Rejection:
    """A fully parsed TimeStampReq, or the rejection (badDataFormat) that answers bytes that are
    not one; never raises."""
    try:
        request = tsp.TimeStampReq.load(request_der, strict=True)  # strict: no trailing bytes
        request.native  # force a full parse: asn1crypto parses lazily
        return request
    # asn1crypto reports hostile DER with ValueError, TypeError, KeyError, IndexError,
    # AttributeError or OverflowError, depending on where the parse breaks: all mean "not a
    # TimeStampReq", and a client must never make the TSA fail.
    except Exception:  # noqa: BLE001
        return _rejection("not a TimeStampReq", "bad_data_format")


def _refusal(request: tsp.TimeStampReq, own_policy: str) -> _Rejection | None:
    """The rejection RFC 3161 asks for a request this TSA does not grant, else None."""
    version = request["version"].native
    if version != "v1":
        # Named when short: a version of thousands of digits is more than Python turns into text.
        named = f"version {version}" if isinstance(version, str) or version.bit_length() <= 64 else "its version"
        return _rejection(f"{named} is not supported; use v1 (1)", "bad_request")
    imprint = request["message_imprint"]
    algorithm = imprint["hash_algorithm"]["algorithm"].native
    if algorithm not in DIGESTS:
        accepted = ", ".join(_digest_name(name) for name in DIGESTS)
        return _rejection(f"the hash algorithm {algorithm} is not accepted; use {accepted}", "bad_alg")
    length = len(imprint["hashed_message"].native)
    if length != DIGESTS[algorithm]:
        # The algorithm is known; the data is not of its size (as OpenSSL's TSA answers it).
        return _rejection(f"the message imprint has {length} octets; a {_digest_name(algorithm)} digest has "
                          f"{DIGESTS[algorithm]}", "bad_data_format")
    policy = request["req_policy"].native
    if policy is not None and policy not in (own_policy, EARLIER_TSA_POLICY):
        return _rejection(f"the policy {policy} is not this TSA's; ask for {own_policy} or for none",
                          "unaccepted_policy")
    # Recognised or not, critical or not: an extension this TSA does not process is refused.
    if request["extensions"].native:
        named = ", ".join(extension["extn_id"].dotted for extension in request["extensions"])
        return _rejection(f"this TSA accepts no extensions: {named}", "unaccepted_extensions")
    return None


class InProcessTimeStamper(TimeStamper):
    """pyHanko's TimeStamper talking to our TSA without a network hop."""

    def __init__(self, authority: TimeStampAuthority):
        super().__init__(include_nonce=True)
        self._authority = authority

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        return await asyncio.to_thread(self._authority.respond_to, req)


class RemoteTimeStamper(TimeStamper):
    """An external RFC 3161 TSA over HTTP (``pades.tsa_url``)."""

    def __init__(self, url: str, timeout: float = 30.0):
        super().__init__(include_nonce=True)
        self.url = url
        self._timeout = timeout

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        return await asyncio.to_thread(self._post, req)

    def _post(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        request = urllib.request.Request(self.url, data=req.dump(),
                                         headers={"Content-Type": "application/timestamp-query"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                body = response.read(MAX_REPLY)
        except (OSError, ValueError) as exc:
            raise UpstreamUnavailable(f"the time-stamping authority {self.url} does not answer: {exc}") from None
        return _response(body, self.url, req["nonce"].native)


def _response(body: bytes, url: str, nonce: int | None) -> tsp.TimeStampResp:
    """The TimeStampResp ``body`` to a request with ``nonce``, parsed and checked as far as
    pyHanko would read it; a TSA's refusal, or any other answer, is the TSA's fault.

    asn1crypto's TimeStampResp insists on a token: a refusal (RFC 3161 2.4.2: a status without
    one) fails to parse, and would otherwise fail later, wherever pyHanko first reads it; and
    pyHanko's own check of the nonce fails on its message.

    The full parse runs on a copy: asn1crypto's native view of a token leaves it to be encoded
    again at every later read, which cost a B-T signature 2.9 s of CPU instead of 0.09 s.

    Raises: UpstreamUnavailable: the TSA refused, or its answer is no TimeStampResp, or grants
        a time-stamp to another request.
    """
    try:
        tsp.TimeStampResp.load(body).native  # noqa: B018 (a full parse: asn1crypto parses lazily)
        response = tsp.TimeStampResp.load(body)
        parsed = response["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed
    except Exception:  # noqa: BLE001 (asn1crypto reports bad DER in many types, as parse_request says)
        pass
    else:
        if parsed["nonce"].native != nonce:
            raise UpstreamUnavailable(f"the time-stamping authority {url} granted no time-stamp: its token "
                                      "answers another request (its nonce is not ours)")
        return response
    try:
        status = _Rejection.load(body)["status"]
        said = "; ".join(status["status_string"].native or []) or status["status"].native
    except Exception:  # noqa: BLE001
        raise UpstreamUnavailable(f"the time-stamping authority {url} answered with no time-stamp response") from None
    raise UpstreamUnavailable(f"the time-stamping authority {url} granted no time-stamp: {str(said)[:200]}")


MAX_REPLY = 1 << 20
