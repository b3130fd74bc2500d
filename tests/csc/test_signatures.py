"""signatures/signHash (v2 and v1 shapes): what a SAD authorises, and what it does not."""

from __future__ import annotations

import base64
import hashlib

import grpc
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from signserver.hsm.algorithms import KeyAlgorithm
from signserver.v1 import signing_pb2, signing_pb2_grpc
from tests.csc.conftest import b64, certified_holder
from tests.grpc_api.conftest import ServerThread

SHA256 = "2.16.840.1.101.3.4.2.1"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"


def authorize(client, holder, digests) -> str:
    answer = client.post("/csc/v2/credentials/authorize", json={
        "credentialID": holder.credential_id, "numSignatures": len(digests), "hashes": [b64(d) for d in digests],
        "hashAlgorithmOID": SHA256,
        "authData": [{"id": "PIN", "value": holder.password}, {"id": "OTP", "value": holder.otp()}]})
    assert answer.status_code == 200, answer.text
    return answer.json()["SAD"]


def sign(client, holder, sad, digests, sign_algo=ECDSA_SHA256, **extra):
    return client.post("/csc/v2/signatures/signHash", json={
        "credentialID": holder.credential_id, "SAD": sad, "hashes": [b64(d) for d in digests],
        "signAlgo": sign_algo, **extra})


def digests_of(*texts: str) -> list[bytes]:
    return [hashlib.sha256(t.encode()).digest() for t in texts]


def test_sign_hashes_with_a_sad_and_verify_them(csc_client, holder):
    digests = digests_of("first", "second")
    answer = sign(csc_client, holder, authorize(csc_client, holder, digests), digests)
    assert answer.status_code == 200, answer.text
    signatures = [base64.b64decode(s) for s in answer.json()["signatures"]]
    for signature, digest in zip(signatures, digests):
        holder.certificate.public_key().verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_the_key_oid_with_hash_algorithm_oid_signs_too(csc_client, holder):
    digests = digests_of("key oid")
    answer = sign(csc_client, holder, authorize(csc_client, holder, digests), digests,
                  sign_algo="1.2.840.10045.2.1", hashAlgorithmOID=SHA256)
    assert answer.status_code == 200, answer.text


def test_a_sad_is_spent_once(csc_client, holder):
    digests = digests_of("once")
    sad = authorize(csc_client, holder, digests)
    assert sign(csc_client, holder, sad, digests).status_code == 200
    again = sign(csc_client, holder, sad, digests)
    assert again.status_code == 400 and again.json()["error"] == "invalid_request"


def test_a_sad_signs_only_the_hashes_it_was_issued_for(csc_client, holder):
    sad = authorize(csc_client, holder, digests_of("authorised"))
    other = sign(csc_client, holder, sad, digests_of("something else"))
    assert other.status_code == 400 and other.json()["error"] == "invalid_request"


def test_a_sad_signs_only_for_its_credential(csc_client, csc_service, csc_clock, holder):
    digests = digests_of("mine")
    sad = authorize(csc_client, holder, digests)
    other = certified_holder(csc_service, csc_clock)
    answer = sign(csc_client, other, sad, digests)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"
    assert sign(csc_client, holder, sad, digests).status_code == 200  # still good for its own


def test_an_expired_sad_is_refused(csc_client, csc_service, holder):
    digests = digests_of("late")
    sad = authorize(csc_client, holder, digests)
    holder.clock.advance(seconds=csc_service.config.authorization.token_lifetime_seconds + 1)
    answer = sign(csc_client, holder, sad, digests)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"


def test_sign_hash_refuses_unknown_algorithms_and_malformed_hashes(csc_client, holder):
    digests = digests_of("algorithm")
    sad = authorize(csc_client, holder, digests)
    unknown = sign(csc_client, holder, sad, digests, sign_algo="1.2.3.4")
    assert unknown.status_code == 400 and "signAlgo" in unknown.json()["error_description"]
    rsa_for_ec = sign(csc_client, holder, sad, digests, sign_algo="1.2.840.113549.1.1.11")
    assert rsa_for_ec.status_code == 400
    malformed = csc_client.post("/csc/v2/signatures/signHash", json={
        "credentialID": holder.credential_id, "SAD": sad, "hashes": ["%%%"], "signAlgo": ECDSA_SHA256})
    assert malformed.status_code == 400 and "base64" in malformed.json()["error_description"]
    assert sign(csc_client, holder, sad, digests).status_code == 200  # none of those spent it


@pytest.mark.parametrize("pss", [False, True])
def test_rsa_pkcs1_and_pss_through_the_v1_shapes(csc_client, csc_service, csc_clock, pss):
    from asn1crypto import algos

    holder = certified_holder(csc_service, csc_clock, key_algorithm=KeyAlgorithm.RSA_2048)
    digest = hashlib.sha256(b"v1 document").digest()
    authorized = csc_client.post("/csc/v1/credentials/authorize", json={
        "credentialID": holder.credential_id, "numSignatures": 1, "hash": [b64(digest)], "PIN": holder.password,
        "OTP": holder.otp()})
    assert authorized.status_code == 200, authorized.text
    request = {"credentialID": holder.credential_id, "SAD": authorized.json()["SAD"], "hash": [b64(digest)],
               "hashAlgo": SHA256, "signAlgo": "1.2.840.113549.1.1.1"}
    if pss:
        params = algos.RSASSAPSSParams({
            "hash_algorithm": {"algorithm": "sha256"},
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}}, "salt_length": 32})
        request.update(signAlgo="1.2.840.113549.1.1.10", signAlgoParams=b64(params.dump()))
    answer = csc_client.post("/csc/v1/signatures/signHash", json=request)
    assert answer.status_code == 200, answer.text
    signature = base64.b64decode(answer.json()["signatures"][0])
    scheme = (padding.PSS(padding.MGF1(hashes.SHA256()), 32) if pss else padding.PKCS1v15())
    holder.certificate.public_key().verify(signature, digest, scheme, Prehashed(hashes.SHA256()))


def test_the_lockout_counts_csc_and_grpc_attempts_together(csc_client, csc_service, config, holder):
    application, api_key = csc_service.applications.create(f"grpc-{holder.username}")
    digest = hashlib.sha256(b"lock").digest()
    wrong = {"credentialID": holder.credential_id, "numSignatures": 1, "hashes": [b64(digest)],
             "authData": [{"id": "PIN", "value": "Wrong-password-9"}]}
    for _ in range(4):
        assert csc_client.post("/csc/v2/credentials/authorize", json=wrong).status_code == 400
    with ServerThread(config, csc_service) as server, server.channel() as channel:
        stub = signing_pb2_grpc.SigningServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Authorize(signing_pb2.AuthorizeRequest(
                account=holder.username, password="Wrong-password-9", otp=holder.otp(),
                credential_id=holder.credential_id, hash_algorithm=signing_pb2.HASH_ALGORITHM_SHA256,
                digests=[digest]), metadata=[("x-api-key", api_key)], timeout=60)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    right = csc_client.post("/csc/v2/credentials/authorize", json={
        **wrong, "authData": [{"id": "PIN", "value": holder.password}, {"id": "OTP", "value": holder.otp()}]})
    assert right.status_code == 403, right.text
    assert right.json()["error"] == "access_denied" and "locked until" in right.json()["error_description"]
    assert right.headers["retry-after"].endswith("GMT") and "locked_until" in right.json()


def test_rsassa_pss_is_signed_as_pss_never_as_pkcs1(csc_client, csc_service, csc_clock):
    holder = certified_holder(csc_service, csc_clock, key_algorithm=KeyAlgorithm.RSA_2048)
    digests = digests_of("pss")
    answer = sign(csc_client, holder, authorize(csc_client, holder, digests), digests,
                  sign_algo="1.2.840.113549.1.1.10", hashAlgorithmOID=SHA256)
    assert answer.status_code == 200, answer.text
    signature = base64.b64decode(answer.json()["signatures"][0])
    public_key = holder.certificate.public_key()
    public_key.verify(signature, digests[0], padding.PSS(padding.MGF1(hashes.SHA256()), 32), Prehashed(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public_key.verify(signature, digests[0], padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def test_pss_parameters_not_signed_here_are_refused_before_the_sad_is_spent(csc_client, csc_service, csc_clock):
    from asn1crypto import algos

    holder = certified_holder(csc_service, csc_clock, key_algorithm=KeyAlgorithm.RSA_2048)
    digests = digests_of("pss salt")
    sad = authorize(csc_client, holder, digests)
    salt_20 = algos.RSASSAPSSParams({
        "hash_algorithm": {"algorithm": "sha256"},
        "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}}, "salt_length": 20})
    refused = sign(csc_client, holder, sad, digests, sign_algo="1.2.840.113549.1.1.10",
                   signAlgoParams=b64(salt_20.dump()))
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"
    other_hash = sign(csc_client, holder, sad, digests, sign_algo="1.2.840.113549.1.1.12")  # RSA with SHA-384
    assert other_hash.status_code == 400
    assert sign(csc_client, holder, sad, digests, sign_algo="1.2.840.113549.1.1.11").status_code == 200
