"""signatureQualifier: the service makes advanced electronic signatures, which it says in
credentials/info (eu_eidas_aes) and accepts by that name; a qualifier it cannot meet (a qualified
signature, a seal, another jurisdiction's type) is refused before anything is spent."""

from __future__ import annotations

import hashlib

import pytest

from signserver.pades.sample import sample_pdf
from tests.csc.conftest import b64
from tests.csc.test_credentials import login
from tests.csc.test_documents import SIGN_DOC, document, sad_for, signed_pdf
from tests.csc.test_signatures import ECDSA_SHA256, SHA256, authorize, digests_of, sign

ADVANCED = "eu_eidas_aes"
NOT_MET = ["eu_eidas_qes", "eu_eidas_aesqc", "eu_eidas_qeseal", "eu_eidas_aeseal", "eu_eidas_aesealqc",
           "za_ecta_aes", "something"]


def assert_qualifier_refused(answer) -> None:
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"
    assert "signatureQualifier" in answer.json()["error_description"]
    assert ADVANCED in answer.json()["error_description"]  # what the service does offer


def test_credential_info_says_which_signatures_the_credential_makes(csc_server, csc_service, csc_client, holder):
    answer = csc_client.post("/csc/v2/credentials/info", json={"credentialID": holder.credential_id})
    assert answer.status_code == 200 and answer.json()["signatureQualifier"] == ADVANCED, answer.text
    application, api_key = csc_service.applications.create(f"qualified-{holder.username}",
                                                           accounts_served=(holder.username,))
    with csc_server.client(headers=login(csc_server, application, api_key)) as client:
        listed = client.post("/csc/v2/credentials/list", json={"userID": holder.username, "credentialInfo": True})
    assert [info["signatureQualifier"] for info in listed.json()["credentialInfos"]] == [ADVANCED], listed.text


@pytest.mark.parametrize("qualifier", NOT_MET)
def test_authorize_refuses_a_qualifier_it_cannot_meet(csc_client, holder, qualifier):
    digests = digests_of("qualified?")
    answer = csc_client.post("/csc/v2/credentials/authorize", json={
        "credentialID": holder.credential_id, "numSignatures": 1, "hashes": [b64(d) for d in digests],
        "hashAlgorithmOID": SHA256, "signatureQualifier": qualifier,
        "authData": [{"id": "PIN", "value": holder.password}, {"id": "OTP", "value": holder.otp()}]})
    assert_qualifier_refused(answer)


def test_authorize_and_sign_hash_take_the_qualifier_they_meet(csc_client, holder):
    digests = digests_of("advanced")
    answer = csc_client.post("/csc/v2/credentials/authorize", json={
        "credentialID": holder.credential_id, "numSignatures": 1, "hashes": [b64(d) for d in digests],
        "hashAlgorithmOID": SHA256, "signatureQualifier": ADVANCED,
        "authData": [{"id": "PIN", "value": holder.password}, {"id": "OTP", "value": holder.otp()}]})
    assert answer.status_code == 200, answer.text
    signed = sign(csc_client, holder, answer.json()["SAD"], digests, signatureQualifier=ADVANCED)
    assert signed.status_code == 200, signed.text


@pytest.mark.parametrize("qualifier", ["eu_eidas_qes", "eu_eidas_qeseal", 1])
def test_sign_hash_refuses_a_qualifier_it_cannot_meet_and_keeps_the_sad(csc_client, holder, qualifier):
    digests = digests_of("kept")
    sad = authorize(csc_client, holder, digests)
    refused = sign(csc_client, holder, sad, digests, signatureQualifier=qualifier)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request", refused.text
    assert "signatureQualifier" in refused.json()["error_description"]
    assert sign(csc_client, holder, sad, digests, sign_algo=ECDSA_SHA256).status_code == 200


@pytest.mark.parametrize("qualifier", ["eu_eidas_qes", "eu_eidas_aesqc"])
def test_sign_doc_refuses_a_qualifier_it_cannot_meet_and_keeps_the_sad(csc_client, csc_service, csc_application,
                                                                      holder, qualifier):
    pdf = sample_pdf(1)
    sad = sad_for(csc_service, csc_application[0], holder, pdf)
    body = {"credentialID": holder.credential_id, "SAD": sad, "documents": [document(pdf, visible=False)]}
    assert_qualifier_refused(csc_client.post(SIGN_DOC, json={**body, "signatureQualifier": qualifier}))
    assert_qualifier_refused(csc_client.post(SIGN_DOC, json={**body, "signatureQualifier": qualifier,
                                                             "operationMode": "A"}))
    signed = signed_pdf(csc_client.post(SIGN_DOC, json={**body, "signatureQualifier": ADVANCED}))
    assert hashlib.sha256(signed).digest() != hashlib.sha256(pdf).digest()
