"""The OCSP responder's and TSA's keys follow the token: the best it offers by default, an
algorithm the token cannot use refused at start naming its setting, and what they sign verifies
with the key's real algorithm."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from signserver.config import load_config
from signserver.errors import ConfigurationError
from signserver.hsm.algorithms import KeyAlgorithm
from tests.conftest import service_with
from tests.hsm.opencryptoki_like import like_opencryptoki


def rsa_only_ca(config, tmp_path, clock, **ca_changes):
    service = service_with(config, tmp_path / "signserver.db", clock, ca=dataclasses.replace(config.ca, **ca_changes))
    like_opencryptoki(service)
    return service


def test_on_an_rsa_only_token_the_ocsp_and_tsa_keys_are_rsa_and_what_they_sign_verifies(config, tmp_path, clock):
    service = rsa_only_ca(config, tmp_path, clock)
    assert service.check_key_settings()["ca.ocsp_key_algorithm"] is KeyAlgorithm.RSA_3072
    service.ca.initialise(operator="operator:test")
    for role in ("ocsp-responder", "tsa"):
        key_id, certificate = service.ca.service_key(role)
        assert service.keys.get(key_id).algorithm is KeyAlgorithm.RSA_3072
        assert isinstance(certificate.public_key(), rsa.RSAPublicKey)

    issuing, _ = service.ca.chain()
    responder = service.ca.service_key("ocsp-responder")[1]
    request = ocsp.OCSPRequestBuilder().add_certificate(responder, issuing, hashes.SHA256()).build()
    response = ocsp.load_der_ocsp_response(service.ca.ocsp(request.public_bytes(Encoding.DER)))
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    responder.public_key().verify(response.signature, response.tbs_response_bytes, padding.PKCS1v15(),
                                  response.signature_hash_algorithm)


def test_an_rsa_tsa_key_signs_time_stamps_openssl_verifies(config, tmp_path, clock):
    service = rsa_only_ca(config, tmp_path, clock)
    service.ca.initialise(operator="operator:test")
    document = tmp_path / "document.txt"
    document.write_bytes(b"a document to time-stamp")
    query = tmp_path / "query.tsq"
    subprocess.run(["openssl", "ts", "-query", "-data", str(document), "-sha256", "-cert", "-out", str(query)],
                   check=True, capture_output=True)
    (tmp_path / "reply.tsr").write_bytes(service.pades.tsa.respond(query.read_bytes()))
    issuing, root = service.ca.chain()
    (tmp_path / "root.pem").write_bytes(root.public_bytes(Encoding.PEM))
    (tmp_path / "issuing.pem").write_bytes(issuing.public_bytes(Encoding.PEM))
    result = subprocess.run(["openssl", "ts", "-verify", "-queryfile", str(query), "-in", str(tmp_path / "reply.tsr"),
                             "-CAfile", str(tmp_path / "root.pem"), "-untrusted", str(tmp_path / "issuing.pem")],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "Verification: OK" in result.stdout, result.stdout + result.stderr
    assert isinstance(service.pades.tsa.certificate().public_key(), rsa.RSAPublicKey)


def test_by_default_a_token_with_ec_gets_p256_service_keys(fresh_service):
    chosen = fresh_service.check_key_settings()
    assert chosen["ca.ocsp_key_algorithm"] is KeyAlgorithm.EC_P256
    assert chosen["ca.tsa_key_algorithm"] is KeyAlgorithm.EC_P256


def test_a_named_algorithm_is_used(config, tmp_path, clock):
    service = service_with(config, tmp_path / "signserver.db", clock,
                           ca=dataclasses.replace(config.ca, tsa_key_algorithm="rsa-2048"))
    service.ca.initialise(operator="operator:test")
    assert isinstance(service.ca.service_key("tsa")[1].public_key(), rsa.RSAPublicKey)
    assert isinstance(service.ca.service_key("ocsp-responder")[1].public_key(), ec.EllipticCurvePublicKey)


def test_an_algorithm_the_token_cannot_use_stops_the_start_naming_the_setting(config, tmp_path, clock):
    service = rsa_only_ca(config, tmp_path, clock, ocsp_key_algorithm="ec-p256")
    with pytest.raises(ConfigurationError) as refused:
        service.check_key_settings()
    assert refused.value.key == "ca.ocsp_key_algorithm" and "ECDSA" in str(refused.value)


@pytest.mark.parametrize("key, value", [("ca.tsa_key_algorithm", "ed25519"), ("ca.ocsp_key_algorithm", "dsa"),
                                        ("audit.seal_key_algorithm", "rsa-1024")])
def test_the_settings_take_auto_or_a_key_algorithm(key, value):
    environ = {"SIGNSERVER_" + key.upper().replace(".", "_"): value}
    with pytest.raises(ConfigurationError) as refused:
        load_config(environ=environ)
    assert refused.value.key == key

