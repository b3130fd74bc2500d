"""The OCSP responder against RFC 6960 and RFC 5019, over a real server on a free port: the
caching headers of a GET, several certificates in one request, and responses that pkilint's
OCSP linter and OpenSSL accept."""

from __future__ import annotations

import base64
import datetime
import email.utils
import hashlib
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from signserver.ca.authority import CertificateRequest
from signserver.config import HttpConfig
from signserver.http.ca_front import CaHttpFront
from tests.ca.test_authority import holder
from tests.ca.test_http_hardening import FrontThread

DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM
LINT_OCSP = Path(sys.executable).with_name("lint_ocsp_response")


@pytest.fixture(scope="module")
def http(ca_service):
    with FrontThread(CaHttpFront(ca_service, "127.0.0.1:0")) as server:
        yield f"http://127.0.0.1:{server.port}"


def issued_certificate(service) -> x509.Certificate:
    created, _ = holder(service)
    return service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra").certificate


def get(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.headers, response.read()


def post(url: str, body: bytes):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/ocsp-request"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers, response.read()


def request_for(certificate: x509.Certificate, issuer: x509.Certificate) -> bytes:
    return ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1()).build().public_bytes(DER)


def get_url(http: str, request_der: bytes) -> str:
    return f"{http}/ocsp/{urllib.parse.quote(base64.b64encode(request_der).decode(), safe='')}"


def test_a_get_response_carries_the_rfc_5019_caching_headers(http, ca_service):
    issuing, _ = ca_service.ca.chain()
    headers, body = get(get_url(http, request_for(issued_certificate(ca_service), issuing)))
    response = ocsp.load_der_ocsp_response(body)
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert headers["Content-Type"] == "application/ocsp-response"
    assert email.utils.parsedate_to_datetime(headers["Last-Modified"]) == response.this_update_utc
    assert email.utils.parsedate_to_datetime(headers["Expires"]) == response.next_update_utc
    assert headers["ETag"] == f'"{hashlib.sha1(body).hexdigest()}"'
    directives = [d.strip() for d in headers["Cache-Control"].split(",")]
    assert {"public", "no-transform", "must-revalidate"} <= set(directives)
    [max_age] = [int(d.split("=")[1]) for d in directives if d.startswith("max-age=")]
    remaining = (response.next_update_utc - ca_service.clock.now()).total_seconds()
    assert 0 < max_age <= remaining


def test_an_unsuccessful_get_response_is_not_cached(http):
    headers, body = get(f"{http}/ocsp/{base64.b64encode(b'not a request').decode()}")
    assert ocsp.load_der_ocsp_response(body).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    assert "public" not in (headers.get("Cache-Control") or "") and headers.get("Expires") is None


def test_several_certificates_in_one_request_are_answered_each_by_openssl(http, ca_service, tmp_path):
    issuing, root = ca_service.ca.chain()
    good, revoked = issued_certificate(ca_service), issued_certificate(ca_service)
    ca_service.ca.revoke(format(revoked.serial_number, "x"), "superseded", "ra")
    (tmp_path / "issuing.pem").write_bytes(issuing.public_bytes(PEM))
    (tmp_path / "chain.pem").write_bytes(issuing.public_bytes(PEM) + root.public_bytes(PEM))
    (tmp_path / "good.pem").write_bytes(good.public_bytes(PEM))
    (tmp_path / "revoked.pem").write_bytes(revoked.public_bytes(PEM))
    result = subprocess.run(["openssl", "ocsp", "-url", f"{http}/ocsp", "-issuer", str(tmp_path / "issuing.pem"),
                             "-cert", str(tmp_path / "good.pem"), "-cert", str(tmp_path / "revoked.pem"),
                             "-serial", "0x1234", "-CAfile", str(tmp_path / "chain.pem"), "-nonce"],
                            capture_output=True, text=True, timeout=60)
    out = result.stdout + result.stderr
    assert "Response verify OK" in out, out
    assert f"{tmp_path / 'good.pem'}: good" in out
    assert f"{tmp_path / 'revoked.pem'}: revoked" in out and "Reason: superseded" in out
    assert "0x1234: unknown" in out


def test_openssl_takes_the_kept_answer_to_a_nonce_beyond_the_limit(ca_service, tmp_path):
    """Beyond a client's limit of fresh signatures, a request with a nonce whose question was
    answered within the minute gets that answer without the nonce (RFC 5019 2.2.1): OpenSSL warns
    of the missing nonce and takes the answer, as RFC 5019 4 asks of clients."""
    issuing, root = ca_service.ca.chain()
    certificate = issued_certificate(ca_service)
    (tmp_path / "issuing.pem").write_bytes(issuing.public_bytes(PEM))
    (tmp_path / "chain.pem").write_bytes(issuing.public_bytes(PEM) + root.public_bytes(PEM))
    (tmp_path / "holder.pem").write_bytes(certificate.public_bytes(PEM))
    settings = HttpConfig(ocsp_rate_per_second=1, ocsp_burst=1)
    with FrontThread(CaHttpFront(ca_service, "127.0.0.1:0", settings)) as server:
        def ask(*options: str) -> str:
            result = subprocess.run(["openssl", "ocsp", "-url", f"http://127.0.0.1:{server.port}/ocsp",
                                     "-issuer", str(tmp_path / "issuing.pem"), "-cert", str(tmp_path / "holder.pem"),
                                     "-CAfile", str(tmp_path / "chain.pem"), *options],
                                    capture_output=True, text=True, timeout=60)
            return result.stdout + result.stderr

        without_nonce = ask("-no_nonce")  # signed (the client's one signature) and kept for a minute
        assert "Response verify OK" in without_nonce and f"{tmp_path / 'holder.pem'}: good" in without_nonce
        beyond = ask("-nonce")
    assert "WARNING: no nonce in response" in beyond, beyond
    assert "Response verify OK" in beyond and f"{tmp_path / 'holder.pem'}: good" in beyond


def test_responses_pass_pkilint(http, ca_service, tmp_path):
    issuing, _ = ca_service.ca.chain()
    good, revoked = issued_certificate(ca_service), issued_certificate(ca_service)
    ca_service.ca.revoke(format(revoked.serial_number, "x"), "keyCompromise", "ra")
    for name, certificate in (("good", good), ("revoked", revoked)):
        _, body = post(f"{http}/ocsp", request_for(certificate, issuing))
        path = tmp_path / f"{name}.der"
        path.write_bytes(body)
        result = subprocess.run([str(LINT_OCSP), "lint", "-s", "WARNING", str(path)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_a_nonce_is_echoed_in_a_response_for_several_certificates(ca_service):
    from asn1crypto import core
    from asn1crypto import ocsp as asn1_ocsp

    issuing, _ = ca_service.ca.chain()
    first, second = issued_certificate(ca_service), issued_certificate(ca_service)
    ids = [asn1_ocsp.OCSPRequest.load(request_for(c, issuing))["tbs_request"]["request_list"][0] for c in (first, second)]
    request = asn1_ocsp.OCSPRequest({"tbs_request": {"request_list": ids, "request_extensions": [
        {"extn_id": "nonce", "critical": False, "extn_value": core.OctetString(b"n" * 16)}]}})
    response = ocsp.load_der_ocsp_response(ca_service.ca.ocsp(request.dump()))
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert [r.serial_number for r in response.responses] == [first.serial_number, second.serial_number]
    assert all(r.certificate_status is ocsp.OCSPCertStatus.GOOD for r in response.responses)
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 16
    responder = ca_service.ca.service_key("ocsp-responder")[1]
    responder.public_key().verify(response.signature, response.tbs_response_bytes,
                                  *_verify_arguments(responder, response))


def _verify_arguments(responder: x509.Certificate, response) -> tuple:
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    key = responder.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return padding.PKCS1v15(), response.signature_hash_algorithm
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return (ec.ECDSA(response.signature_hash_algorithm),)


def test_request_and_response_times_are_sane(ca_service):
    issuing, _ = ca_service.ca.chain()
    response = ocsp.load_der_ocsp_response(ca_service.ca.ocsp(request_for(issued_certificate(ca_service), issuing)))
    now = ca_service.clock.now()
    assert response.this_update_utc <= now + datetime.timedelta(seconds=1)
    assert response.next_update_utc - response.this_update_utc == datetime.timedelta(hours=ca_service.config.ca.crl_hours)
