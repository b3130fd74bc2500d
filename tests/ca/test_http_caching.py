"""The CRLs' HTTP caching (RFC 5019 6.2's header fields, RFC 9111) and conditional requests
(RFC 7232), over a real server on a free port."""

from __future__ import annotations

import base64
import email.utils
import urllib.parse

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from signserver.ca.authority import CertificateRequest
from signserver.http.ca_front import CaHttpFront
from tests.ca.test_authority import holder
from tests.ca.test_http_hardening import FrontThread

DER = serialization.Encoding.DER


def issue(ca_service) -> x509.Certificate:
    created, _ = holder(ca_service)
    return ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username),
                               "ra:test").certificate


@pytest.fixture(scope="module")
def http(ca_service):
    with FrontThread(CaHttpFront(ca_service, "127.0.0.1:0")) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
            yield client


def http_date(moment) -> str:
    return email.utils.format_datetime(moment, usegmt=True)


@pytest.mark.parametrize("authority", ["issuing", "root"])
def test_a_crl_carries_its_validity_as_caching_headers(http, ca_clock, authority):
    answer = http.get(f"/crl/{authority}.crl")
    assert answer.status_code == 200
    crl = x509.load_der_x509_crl(answer.content)
    assert answer.headers["Last-Modified"] == http_date(crl.last_update_utc)
    assert answer.headers["Expires"] == http_date(crl.next_update_utc)
    assert answer.headers["ETag"].startswith('"') and answer.headers["ETag"].endswith('"')
    directives = [part.strip() for part in answer.headers["Cache-Control"].split(",")]
    assert {"public", "no-transform", "must-revalidate"} <= set(directives)
    max_age = int(next(part for part in directives if part.startswith("max-age="))[len("max-age="):])
    assert 0 < max_age <= (crl.next_update_utc - ca_clock.now()).total_seconds()


def test_a_crl_not_changed_since_is_answered_304(http):
    first = http.get("/crl/issuing.crl")
    etag, last_modified = first.headers["ETag"], first.headers["Last-Modified"]

    unchanged = http.get("/crl/issuing.crl", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["ETag"] == etag
    assert unchanged.headers["Cache-Control"] == first.headers["Cache-Control"]
    assert unchanged.headers["Expires"] == first.headers["Expires"]
    assert http.get("/crl/issuing.crl", headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
    assert http.get("/crl/issuing.crl", headers={"If-None-Match": "*"}).status_code == 304
    assert http.get("/crl/issuing.crl", headers={"If-Modified-Since": last_modified}).status_code == 304

    assert http.get("/crl/issuing.crl", headers={"If-None-Match": '"other"'}).status_code == 200
    assert http.get("/crl/issuing.crl", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}
                    ).status_code == 200
    assert http.get("/crl/issuing.crl", headers={"If-Modified-Since": "not a date"}).status_code == 200
    # If-None-Match decides when both are sent (RFC 7232 6).
    both = http.get("/crl/issuing.crl", headers={"If-None-Match": '"other"', "If-Modified-Since": last_modified})
    assert both.status_code == 200 and both.content == first.content


def test_a_new_crl_is_sent_to_a_client_holding_the_old_one(http, ca_service, ca_clock):
    old = http.get("/crl/issuing.crl")
    ca_clock.advance(seconds=1)
    ca_service.ca.publish_crls()

    new = http.get("/crl/issuing.crl", headers={"If-None-Match": old.headers["ETag"],
                                                "If-Modified-Since": old.headers["Last-Modified"]})
    assert new.status_code == 200 and new.headers["ETag"] != old.headers["ETag"]
    assert (x509.load_der_x509_crl(new.content).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            > x509.load_der_x509_crl(old.content).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)


def ocsp_path(certificate, issuing) -> str:
    request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuing, hashes.SHA1()).build()
    return "/ocsp/" + urllib.parse.quote(base64.b64encode(request.public_bytes(DER)).decode(), safe="")


def test_an_ocsp_answer_is_signed_once_a_minute_so_a_client_holding_it_gets_304(http, ca_service, ca_clock):
    """RFC 5019's pre-produced answers: within a minute the same question gets the answer signed
    for it, with its ETag and Last-Modified, so a conditional GET gets 304 and a flood of one
    question costs the HSM one signature."""
    issuing = ca_service.ca.chain()[0]
    path = ocsp_path(issue(ca_service), issuing)
    first = http.get(path)
    assert first.status_code == 200
    ca_clock.advance(seconds=30)
    again = http.get(path)
    assert again.content == first.content and again.headers["ETag"] == first.headers["ETag"]
    assert http.get(path, headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    assert http.get(path, headers={"If-Modified-Since": first.headers["Last-Modified"]}).status_code == 304

    ca_clock.advance(seconds=31)  # a minute on: signed anew, thisUpdate now
    later = http.get(path, headers={"If-None-Match": first.headers["ETag"]})
    assert later.status_code == 200 and later.headers["ETag"] != first.headers["ETag"]
    assert ocsp.load_der_ocsp_response(later.content).this_update_utc == ca_clock.now().replace(microsecond=0)


def test_a_revocation_is_in_the_next_ocsp_answer_whatever_was_signed_before(http, ca_service):
    issuing = ca_service.ca.chain()[0]
    certificate = issue(ca_service)
    path = ocsp_path(certificate, issuing)
    good = http.get(path)
    assert ocsp.load_der_ocsp_response(good.content).certificate_status is ocsp.OCSPCertStatus.GOOD
    ca_service.ca.revoke(format(certificate.serial_number, "x"), "keyCompromise", "ra:test")
    revoked = http.get(path, headers={"If-None-Match": good.headers["ETag"]})
    assert revoked.status_code == 200
    assert ocsp.load_der_ocsp_response(revoked.content).certificate_status is ocsp.OCSPCertStatus.REVOKED


def test_an_ocsp_request_with_a_nonce_gets_an_answer_of_its_own(http, ca_service):
    issuing = ca_service.ca.chain()[0]
    certificate = issue(ca_service)
    answers = []
    for nonce in (b"\x01" * 16, b"\x02" * 16):
        request = (ocsp.OCSPRequestBuilder().add_certificate(certificate, issuing, hashes.SHA1())
                   .add_extension(x509.OCSPNonce(nonce), critical=False).build())
        answer = http.post("/ocsp", content=request.public_bytes(DER),
                           headers={"Content-Type": "application/ocsp-request"})
        response = ocsp.load_der_ocsp_response(answer.content)
        assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
        answers.append(answer.content)
    assert answers[0] != answers[1]
