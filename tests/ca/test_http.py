"""The CA's HTTP endpoints, checked with OpenSSL as an independent client."""

from __future__ import annotations

import base64
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from signserver.ca.authority import CertificateRequest
from signserver.http.ca_front import CaHttpFront
from tests.ca.test_authority import holder
from tests.ca.test_http_hardening import FrontThread

PEM = serialization.Encoding.PEM


@pytest.fixture(scope="module")
def http(ca_service):
    with FrontThread(CaHttpFront(ca_service, "127.0.0.1:0")) as server:
        yield f"http://127.0.0.1:{server.port}"


def fetch(url: str, data: bytes | None = None, content_type: str | None = None):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type} if content_type else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers.get("Content-Type"), response.read()


def test_crls_and_ca_certificates(http, ca_service):
    issuing, root = ca_service.ca.chain()
    kind, body = fetch(f"{http}/ca/root.crt")
    assert kind == "application/pkix-cert" and x509.load_der_x509_certificate(body) == root
    kind, body = fetch(f"{http}/crl/issuing.crl")
    assert kind == "application/pkix-crl" and x509.load_der_x509_crl(body).is_signature_valid(issuing.public_key())
    assert b"cloud-signature-government" in fetch(f"{http}/cps")[1]
    with pytest.raises(urllib.error.HTTPError) as missing:
        fetch(f"{http}/nothing-here")
    assert missing.value.code == 404


def test_openssl_ocsp_says_good_then_revoked(http, ca_service, tmp_path):
    created, _ = holder(ca_service)
    issued = ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra")
    issuing, root = ca_service.ca.chain()
    (tmp_path / "issuing.pem").write_bytes(issuing.public_bytes(PEM))
    (tmp_path / "chain.pem").write_bytes(issuing.public_bytes(PEM) + root.public_bytes(PEM))
    (tmp_path / "leaf.pem").write_bytes(issued.certificate.public_bytes(PEM))

    def openssl_ocsp() -> str:
        result = subprocess.run(["openssl", "ocsp", "-url", f"{http}/ocsp", "-issuer", str(tmp_path / "issuing.pem"),
                                 "-cert", str(tmp_path / "leaf.pem"), "-CAfile", str(tmp_path / "chain.pem"),
                                 "-nonce"], capture_output=True, text=True, timeout=60)
        assert "Response verify OK" in result.stderr + result.stdout, result.stderr + result.stdout
        return result.stdout

    assert f"{tmp_path / 'leaf.pem'}: good" in openssl_ocsp()
    ca_service.ca.revoke(issued.serial, "keyCompromise", "ra")
    out = openssl_ocsp()
    assert f"{tmp_path / 'leaf.pem'}: revoked" in out and "Reason: keyCompromise" in out


def test_ocsp_over_get(http, ca_service):
    created, _ = holder(ca_service)
    issued = ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra")
    issuing, _ = ca_service.ca.chain()
    request = ocsp.OCSPRequestBuilder().add_certificate(issued.certificate, issuing, hashes.SHA1()).build()
    encoded = base64.b64encode(request.public_bytes(serialization.Encoding.DER)).decode()
    kind, body = fetch(f"{http}/ocsp/{urllib.parse.quote(encoded, safe='')}")
    response = ocsp.load_der_ocsp_response(body)
    assert kind == "application/ocsp-response"
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD


def test_crl_parses_with_openssl(http, tmp_path):
    _, body = fetch(f"{http}/crl/issuing.crl")
    (tmp_path / "issuing.crl").write_bytes(body)
    result = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(tmp_path / "issuing.crl"), "-noout",
                             "-crlnumber", "-nextupdate"], capture_output=True, text=True)
    assert result.returncode == 0 and "crlNumber=" in result.stdout and "nextUpdate=" in result.stdout


def test_timestamps_verify_with_openssl_ts(http, ca_service, tmp_path):
    document = tmp_path / "document.txt"
    document.write_bytes(b"a document to time-stamp")
    query = tmp_path / "query.tsq"
    subprocess.run(["openssl", "ts", "-query", "-data", str(document), "-sha256", "-cert", "-out", str(query)],
                   check=True, capture_output=True)
    kind, reply = fetch(f"{http}/tsa", query.read_bytes(), "application/timestamp-query")
    assert kind == "application/timestamp-reply"
    (tmp_path / "reply.tsr").write_bytes(reply)
    issuing, root = ca_service.ca.chain()
    (tmp_path / "root.pem").write_bytes(root.public_bytes(PEM))
    (tmp_path / "issuing.pem").write_bytes(issuing.public_bytes(PEM))
    result = subprocess.run(["openssl", "ts", "-verify", "-queryfile", str(query), "-in", str(tmp_path / "reply.tsr"),
                             "-CAfile", str(tmp_path / "root.pem"), "-untrusted", str(tmp_path / "issuing.pem")],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "Verification: OK" in result.stdout, result.stdout + result.stderr
    tsa_certificate = ca_service.ca.service_key("tsa")[1]
    usage = tsa_certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert usage.critical and list(usage.value) == [x509.oid.ExtendedKeyUsageOID.TIME_STAMPING]

    _, rejected = fetch(f"{http}/tsa", b"not a query", "application/timestamp-query")
    from asn1crypto import core, tsp

    assert tsp.PKIStatusInfo.load(core.Sequence.load(rejected)[0].dump())["status"].native == "rejection"
