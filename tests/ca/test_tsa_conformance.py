"""The time-stamping authority against RFC 3161 (and RFC 5816's ESSCertIDv2): what a query asks
for is what the reply carries, and a query it cannot grant is rejected with the failure RFC 3161
names for it and a text that says what was wrong."""

from __future__ import annotations

import hashlib
import random
import subprocess

import pytest
from asn1crypto import core, tsp
from cryptography.hazmat.primitives import serialization

PEM = serialization.Encoding.PEM


def query(algorithm: str = "sha256", digest: bytes | None = None, cert_req: bool | None = True) -> tsp.TimeStampReq:
    digest = hashlib.new(algorithm, b"a document").digest() if digest is None else digest
    fields = {"version": "v1", "nonce": random.getrandbits(64),
              "message_imprint": {"hash_algorithm": {"algorithm": algorithm}, "hashed_message": digest}}
    if cert_req is not None:
        fields["cert_req"] = cert_req
    return tsp.TimeStampReq(fields)


def rejection(reply: bytes) -> tuple[str, set, str]:
    info = tsp.PKIStatusInfo.load(core.Sequence.load(reply)[0].dump())
    return info["status"].native, info["fail_info"].native or set(), " ".join(info["status_string"].native or [])


def token_certificates(reply: bytes) -> list:
    signed = tsp.TimeStampResp.load(reply)["time_stamp_token"]["content"]
    return [choice.chosen for choice in signed["certificates"]] if signed["certificates"].native else []


@pytest.mark.parametrize("cert_req", [False, None], ids=["false", "absent"])
def test_a_query_without_cert_req_gets_a_token_without_certificates(ca_service, tmp_path, cert_req):
    # RFC 3161 2.4.1: certReq missing or false, "the certificates field ... MUST not be present".
    request = query(cert_req=cert_req)
    reply = ca_service.pades.tsa.respond(request.dump())
    assert rejection(reply)[0] == "granted"
    assert token_certificates(reply) == []
    # The token still verifies once the verifier brings the TSA's certificate itself.
    issuing, root = ca_service.ca.chain()
    (tmp_path / "query.tsq").write_bytes(request.dump())
    (tmp_path / "reply.tsr").write_bytes(reply)
    (tmp_path / "root.pem").write_bytes(root.public_bytes(PEM))
    (tmp_path / "untrusted.pem").write_bytes(ca_service.pades.tsa.certificate().public_bytes(PEM)
                                             + issuing.public_bytes(PEM))
    result = subprocess.run(["openssl", "ts", "-verify", "-queryfile", str(tmp_path / "query.tsq"),
                             "-in", str(tmp_path / "reply.tsr"), "-CAfile", str(tmp_path / "root.pem"),
                             "-untrusted", str(tmp_path / "untrusted.pem")], capture_output=True, text=True)
    assert "Verification: OK" in result.stdout, result.stdout + result.stderr


def test_a_query_with_cert_req_gets_the_tsas_certificate(ca_service):
    reply = ca_service.pades.tsa.respond(query(cert_req=True).dump())
    assert ca_service.pades.tsa.certificate().serial_number in [c.serial_number for c in token_certificates(reply)]


def test_the_signing_certificate_is_named_by_an_ess_cert_id_v2(ca_service):
    reply = tsp.TimeStampResp.load(ca_service.pades.tsa.respond(query().dump()))
    attributes = reply["time_stamp_token"]["content"]["signer_infos"][0]["signed_attrs"]
    [v2] = [attribute["values"][0] for attribute in attributes if attribute["type"].native == "signing_certificate_v2"]
    certificate = ca_service.pades.tsa.certificate()
    cert_id = v2["certs"][0]
    assert cert_id["cert_hash"].native == hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()
    assert cert_id["issuer_serial"]["serial_number"].native == certificate.serial_number
    # SHA-256 is the DEFAULT of ESSCertIDv2's hashAlgorithm: DER leaves it out.
    assert cert_id.contents[:2] == b"\x04\x20"


@pytest.mark.parametrize("algorithm,length", [("sha256", 20), ("sha256", 33), ("sha512", 32), ("sha384", 0)])
def test_an_imprint_of_the_wrong_length_is_bad_data_format_and_says_so(ca_service, algorithm, length):
    status, failures, text = rejection(ca_service.pades.tsa.respond(query(algorithm, b"\x01" * length).dump()))
    expected = {"sha256": 32, "sha384": 48, "sha512": 64}[algorithm]
    assert (status, failures) == ("rejection", {"bad_data_format"})
    assert str(length) in text and str(expected) in text and algorithm.upper().replace("SHA", "SHA-") in text


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha224", "sha3_256"])
def test_an_unsupported_hash_algorithm_is_bad_alg_and_named(ca_service, algorithm):
    status, failures, text = rejection(ca_service.pades.tsa.respond(query(algorithm).dump()))
    assert (status, failures) == ("rejection", {"bad_alg"})
    assert "SHA-256" in text


def test_an_unknown_hash_oid_is_bad_alg(ca_service):
    request = tsp.TimeStampReq({"version": "v1", "message_imprint": {
        "hash_algorithm": {"algorithm": "1.2.3.4.5"}, "hashed_message": b"\x01" * 32}})
    status, failures, text = rejection(ca_service.pades.tsa.respond(request.dump()))
    assert (status, failures) == ("rejection", {"bad_alg"}) and "1.2.3.4.5" in text



def test_a_refused_policy_extension_or_version_is_named_in_the_rejection(ca_service):
    tsa = ca_service.pades.tsa
    request = query()
    request["req_policy"] = "1.2.3.4.5"
    status, failures, text = rejection(tsa.respond(request.dump()))
    assert (status, failures) == ("rejection", {"unaccepted_policy"}) and "1.2.3.4.5" in text and tsa.policy in text
    request = query()
    request["extensions"] = [{"extn_id": "1.2.3.4", "critical": False, "extn_value": core.OctetString(b"x").dump()}]
    status, failures, text = rejection(tsa.respond(request.dump()))
    assert (status, failures) == ("rejection", {"unaccepted_extensions"}) and "1.2.3.4" in text
    request = query()
    request["version"] = 2
    status, failures, text = rejection(tsa.respond(request.dump()))
    assert (status, failures) == ("rejection", {"bad_request"}) and "2" in text and "v1" in text
