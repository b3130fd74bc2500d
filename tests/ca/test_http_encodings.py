"""What the OCSP responder and the TSA sign is DER, whatever encoding of a request they read.

asn1crypto reads BER forms that DER forbids (an INTEGER with a redundant leading zero, a length
in long form), and the answers echo parts of the request: the CertIDs, the message imprint, the
nonce. Signed as read, those answers are not DER (RFC 6960 4.2.1, RFC 3161 2.4.2), and OpenSSL
and ``cryptography`` refuse them. Odd header values and numbers are answered, never a 500.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import urllib.parse

import pytest
from asn1crypto import core, keys as asn1_keys, tsp
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from signserver.ca.authority import CertificateRequest
from tests.ca.test_authority import holder
from tests.ca.test_http_hardening import body_of, exchange, post, reply_status, serving, status_of, \
    time_stamp_query

DER = serialization.Encoding.DER
SHA1 = bytes.fromhex("2b0e03021a")
SHA256 = bytes.fromhex("608648016503040201")


@pytest.fixture(scope="module")
def server(ca_service):
    with serving(ca_service, tsa_rate_per_second=1000, tsa_burst=30) as running:
        yield running


@pytest.fixture(scope="module")
def certificate(ca_service):
    created, _ = holder(ca_service)
    return ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username),
                               "ra:test").certificate


def tlv(tag: int, body: bytes, long_form: bool = False) -> bytes:
    """A tag, its length (in long form when asked: BER, not DER) and ``body``."""
    if long_form or len(body) >= 128:
        size = len(body).to_bytes((len(body).bit_length() + 7) // 8 or 1, "big")
        return bytes([tag, 0x80 | len(size)]) + size + body
    return bytes([tag, len(body)]) + body


def ocsp_request_of(certificate, issuing, *, serial: bytes | None = None, long_lengths: bool = False,
                    parameters: bytes = b"\x05\x00", beyond_cert_id: bytes = b"",
                    beyond_algorithm: bytes = b"") -> bytes:
    """An OCSPRequest for ``certificate`` written by hand, with the BER forms asked for (and
    elements after the last one CertID, or its AlgorithmIdentifier, defines)."""
    name_hash = hashlib.sha1(issuing.subject.public_bytes()).digest()
    spki = asn1_keys.PublicKeyInfo.load(issuing.public_key().public_bytes(
        DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    key_hash = hashlib.sha1(spki["public_key"].contents[1:]).digest()
    algorithm = tlv(0x30, tlv(0x06, SHA1) + parameters + beyond_algorithm)
    serial = serial or core.Integer(certificate.serial_number).dump()
    cert_id = tlv(0x30, algorithm + tlv(0x04, name_hash, long_lengths) + tlv(0x04, key_hash) + serial + beyond_cert_id,
                  long_lengths)
    return tlv(0x30, tlv(0x30, tlv(0x30, tlv(0x30, cert_id))))


def padded(number: int) -> bytes:
    """``number`` as an INTEGER with a redundant leading zero octet."""
    return tlv(0x02, b"\x00" + number.to_bytes((number.bit_length() + 8) // 8, "big"))


BER_FORMS = {
    "serial with a leading zero": {"serial": True},
    "lengths in long form": {"long_lengths": True},
    "NULL in long form": {"parameters": b"\x05\x81\x00"},
}


@pytest.mark.parametrize("form", BER_FORMS.values(), ids=BER_FORMS.keys())
def test_an_ocsp_request_in_ber_gets_a_der_answer_by_post_and_get(server, ca_service, certificate, form):
    issuing = ca_service.ca.chain()[0]
    options = dict(form)
    if options.pop("serial", False):
        options["serial"] = padded(certificate.serial_number)
    request = ocsp_request_of(certificate, issuing, **options)
    path = "/ocsp/" + urllib.parse.quote(base64.b64encode(request).decode(), safe="")
    answers = [post(server.port, "/ocsp", request),
               exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n".encode())]
    for answer in answers:
        assert status_of(answer) == 200, answer[:200]
        response = ocsp.load_der_ocsp_response(body_of(answer))  # refuses what is not DER
        assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
        assert response.serial_number == certificate.serial_number


# An element that the structure it is in does not define, after the last one it does: BER or
# not, such a request is malformed, and asn1crypto reads it all the same.
UNDEFINED = {"an INTEGER": b"\x02\x01\x05", "a PrintableString": tlv(0x13, b"odd"),
             "a SEQUENCE": tlv(0x30, b"\x05\x00")}


@pytest.mark.parametrize("where", ["beyond_cert_id", "beyond_algorithm"])
@pytest.mark.parametrize("element", UNDEFINED.values(), ids=UNDEFINED.keys())
def test_an_ocsp_request_with_an_element_its_cert_id_does_not_define_is_malformed(server, ca_service, certificate,
                                                                                   where, element):
    request = ocsp_request_of(certificate, ca_service.ca.chain()[0], **{where: element})
    answer = post(server.port, "/ocsp", request)
    assert status_of(answer) == 200, answer[:200]
    assert ocsp.load_der_ocsp_response(body_of(answer)).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


TSA_IMPRINT = tlv(0x30, tlv(0x06, SHA256) + b"\x05\x00")
DIGEST = hashlib.sha256(b"a document").digest()


def time_stamp_query_of(imprint: bytes, nonce: bytes = b"\x02\x01\x05") -> bytes:
    """A TimeStampReq written by hand: version 1, ``imprint`` (a MessageImprint's encoding),
    ``nonce`` (an INTEGER's) and certReq true."""
    return tlv(0x30, b"\x02\x01\x01" + imprint + nonce + b"\x01\x01\xff")


TSA_BER_FORMS = {
    "nonce with a leading zero": time_stamp_query_of(tlv(0x30, TSA_IMPRINT + tlv(0x04, DIGEST)), b"\x02\x02\x00\x05"),
    "imprint in long form": time_stamp_query_of(tlv(0x30, TSA_IMPRINT + tlv(0x04, DIGEST, True), True)),
    "NULL in long form": time_stamp_query_of(tlv(0x30, tlv(0x30, tlv(0x06, SHA256) + b"\x05\x81\x00")
                                                 + tlv(0x04, DIGEST))),
}


@pytest.mark.parametrize("query", TSA_BER_FORMS.values(), ids=TSA_BER_FORMS.keys())
def test_a_time_stamp_request_in_ber_gets_a_token_openssl_verifies(server, ca_service, query, tmp_path):
    reply = body_of(post(server.port, "/tsa", query))
    assert reply_status(reply)[0] == "granted"
    issuing, root = ca_service.ca.chain()
    (tmp_path / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "issuing.pem").write_bytes(issuing.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "data").write_bytes(b"a document")
    (tmp_path / "reply.tsr").write_bytes(reply)
    verified = subprocess.run(["openssl", "ts", "-verify", "-data", str(tmp_path / "data"),
                               "-in", str(tmp_path / "reply.tsr"), "-CAfile", str(tmp_path / "root.pem"),
                               "-untrusted", str(tmp_path / "issuing.pem")], capture_output=True, text=True, timeout=60)
    assert "Verification: OK" in verified.stdout, verified.stdout + verified.stderr


@pytest.mark.parametrize("where", ["imprint", "algorithm"])
@pytest.mark.parametrize("element", UNDEFINED.values(), ids=UNDEFINED.keys())
def test_a_time_stamp_request_with_an_element_its_imprint_does_not_define_is_bad_data_format(server, where, element):
    algorithm = tlv(0x30, tlv(0x06, SHA256) + b"\x05\x00" + (element if where == "algorithm" else b""))
    imprint = tlv(0x30, algorithm + tlv(0x04, DIGEST) + (element if where == "imprint" else b""))
    answer = post(server.port, "/tsa", time_stamp_query_of(imprint))
    assert status_of(answer) == 200, answer[:200]
    assert reply_status(body_of(answer)) == ("rejection", {"bad_data_format"})


def test_a_time_stamp_request_of_a_huge_version_is_rejected(server):
    query = tsp.TimeStampReq.load(time_stamp_query())
    query["version"] = tsp.Version(1 << 16000)  # more digits than Python turns into text
    reply = body_of(post(server.port, "/tsa", query.dump(force=True)))
    assert reply_status(reply) == ("rejection", {"bad_request"})


@pytest.mark.parametrize("path", ["/crl/issuing.crl", "/crl/root.crl"])
def test_an_if_modified_since_beyond_any_date_is_ignored(server, path):
    """RFC 9110 13.1.3: a date that is not valid is ignored."""
    answer = exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n"
                                   "If-Modified-Since: Mon, 01 Jan 99999999999999999999 00:00:00 GMT\r\n\r\n".encode())
    assert status_of(answer) == 200, answer[:200]
