"""The Content-Type of OCSP requests (RFC 6960 A.1.1) and time-stamp queries (RFC 3161 3.4) by
POST, with the clients people use (openssl ocsp, curl), over a real server on a free port."""

from __future__ import annotations

import subprocess

import httpx
import pytest
from asn1crypto import core, tsp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from signserver.http.ca_front import CaHttpFront
from tests.ca.test_http_hardening import FrontThread, post, status_of, time_stamp_query

DER = serialization.Encoding.DER


@pytest.fixture(scope="module")
def server(ca_service):
    with FrontThread(CaHttpFront(ca_service, "127.0.0.1:0")) as running:
        yield running


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def ocsp_request_der(ca_service) -> bytes:
    issuing, root = ca_service.ca.chain()
    return ocsp.OCSPRequestBuilder().add_certificate(issuing, root, hashes.SHA256()).build().public_bytes(DER)


def answered_ocsp(answer: httpx.Response) -> bool:
    """An OCSP response, whatever it says of the certificate: the request was taken."""
    return (answer.status_code == 200 and answer.headers["Content-Type"] == "application/ocsp-response"
            and ocsp.load_der_ocsp_response(answer.content).response_status
            is not ocsp.OCSPResponseStatus.MALFORMED_REQUEST)


def answered_granted(answer: httpx.Response) -> bool:
    return (answer.status_code == 200 and answer.headers["Content-Type"] == "application/timestamp-reply"
            and tsp.PKIStatusInfo.load(core.Sequence.load(answer.content)[0].dump())["status"].native == "granted")


@pytest.mark.parametrize("content_type", ["application/json", "text/html; charset=utf-8", "text/plain",
                                          "multipart/form-data; boundary=x", "application/timestamp-query"])
def test_an_ocsp_request_of_another_media_type_is_answered_415_naming_the_expected_one(
        http, ocsp_request_der, content_type):
    answer = http.post("/ocsp", content=ocsp_request_der, headers={"Content-Type": content_type})
    assert answer.status_code == 415
    assert "application/ocsp-request" in answer.text
    assert answer.headers["Accept-Post"] == "application/ocsp-request"


@pytest.mark.parametrize("content_type", ["application/json", "text/html", "application/ocsp-request"])
def test_a_time_stamp_query_of_another_media_type_is_answered_415_naming_the_expected_one(http, content_type):
    answer = http.post("/tsa", content=time_stamp_query(), headers={"Content-Type": content_type})
    assert answer.status_code == 415
    assert "application/timestamp-query" in answer.text
    assert answer.headers["Accept-Post"] == "application/timestamp-query"


@pytest.mark.parametrize("content_type", ["application/ocsp-request", "Application/OCSP-Request",
                                          "application/ocsp-request; charset=binary",
                                          # what curl --data-binary and Python's urllib send by default
                                          "application/x-www-form-urlencoded",
                                          "application/octet-stream"])
def test_an_ocsp_request_is_answered_under_its_own_type_and_the_clients_defaults(
        http, ocsp_request_der, content_type):
    assert answered_ocsp(http.post("/ocsp", content=ocsp_request_der, headers={"Content-Type": content_type}))


def test_a_request_without_a_content_type_is_answered(server, ocsp_request_der):
    # RFC 9110 8.3: the recipient may examine the data; an OCSP request and a query are DER.
    assert status_of(post(server.port, "/ocsp", ocsp_request_der)) == 200
    assert status_of(post(server.port, "/tsa", time_stamp_query())) == 200


def test_curl_with_and_without_the_media_type(server, tmp_path):
    query = tmp_path / "query.tsq"
    query.write_bytes(time_stamp_query())
    url = f"http://127.0.0.1:{server.port}/tsa"

    def curl(*options: str) -> subprocess.CompletedProcess:
        return subprocess.run(["curl", "-sS", "--data-binary", f"@{query}", "-o", str(tmp_path / "reply"),
                               "-w", "%{http_code}", *options, url], capture_output=True, text=True, timeout=60)

    assert curl("-H", "Content-Type: application/timestamp-query").stdout == "200"
    assert curl().stdout == "200"  # curl's default, application/x-www-form-urlencoded
    refused = curl("-H", "Content-Type: application/json")
    assert refused.stdout == "415" and "application/timestamp-query" in (tmp_path / "reply").read_text()


def test_a_time_stamp_query_under_its_type_is_granted(http):
    assert answered_granted(http.post("/tsa", content=time_stamp_query(),
                                      headers={"Content-Type": "application/timestamp-query"}))
