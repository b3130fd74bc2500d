"""credentials/list, /info, /authorize and /extendTransaction against the CSC v2 shapes."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography import x509

from tests.csc.conftest import b64, basic


def login(csc_server, application, api_key) -> dict[str, str]:
    with csc_server.client() as client:
        token = client.post("/csc/v2/auth/login", headers=basic(application.name, api_key)).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def authorize_body(holder, digests, **changes):
    body = {"credentialID": holder.credential_id, "numSignatures": len(digests), "hashes": [b64(d) for d in digests],
            "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1",
            "authData": [{"id": "PIN", "value": holder.password}, {"id": "OTP", "value": holder.otp()}]}
    body.update(changes)
    return body


def test_list_with_certificates_for_an_application_whose_policy_names_the_account(csc_server, csc_service, holder):
    application, api_key = csc_service.applications.create(f"named-{holder.username}",
                                                           accounts_served=(holder.username,))
    with csc_server.client(headers=login(csc_server, application, api_key)) as client:
        answer = client.post("/csc/v2/credentials/list", json={
            "userID": holder.username, "credentialInfo": True, "certificates": "chain", "certInfo": True,
            "authInfo": True})
        plain = client.post("/csc/v2/credentials/list", json={"userID": holder.username})
    assert answer.status_code == 200, answer.text
    listed = answer.json()
    assert listed["credentialIDs"] == [holder.credential_id]
    info = next(i for i in listed["credentialInfos"] if i["credentialID"] == holder.credential_id)
    assert len(info["cert"]["certificates"]) == 3 and info["cert"]["status"] == "valid"
    assert info["auth"]["mode"] == "explicit"
    assert plain.json() == {"credentialIDs": listed["credentialIDs"], "onlyValid": False}
    assert "credentialInfos" not in plain.json()


def test_list_refuses_an_account_the_policy_does_not_name_and_needs_a_user(csc_client, holder):
    refused = csc_client.post("/csc/v2/credentials/list", json={"userID": holder.username})
    assert refused.status_code == 403 and refused.json()["error"] == "access_denied"
    unknown = csc_client.post("/csc/v2/credentials/list", json={"userID": "nobody-at-all"})
    assert unknown.json()["error_description"] == refused.json()["error_description"]  # existence is not told
    missing = csc_client.post("/csc/v2/credentials/list", json={})
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"


def test_info_has_the_key_the_chain_and_the_authorisation(csc_client, csc_service, holder):
    answer = csc_client.post("/csc/v2/credentials/info", json={
        "credentialID": holder.credential_id, "certificates": "chain", "certInfo": True, "authInfo": True})
    assert answer.status_code == 200, answer.text
    info = answer.json()
    assert info["key"] == {"status": "enabled", "len": 256, "curve": "1.2.840.10045.3.1.7",
                           "algo": ["1.2.840.10045.2.1", "1.2.840.10045.4.3.2", "1.2.840.10045.4.3.3",
                                    "1.2.840.10045.4.3.4"]}
    chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in info["cert"]["certificates"]]
    assert chain == [holder.certificate, *csc_service.ca.chain()]
    assert info["cert"]["serialNumber"] == format(holder.certificate.serial_number, "x")
    assert info["cert"]["issuerDN"] == holder.certificate.issuer.rfc4514_string()
    assert info["cert"]["validFrom"].endswith("Z") and len(info["cert"]["validTo"]) == 15
    assert info["cert"]["status"] == "valid"
    assert info["SCAL"] == "2" and info["multisign"] == csc_service.config.authorization.max_signatures
    assert info["auth"]["mode"] == "explicit"
    assert [o["id"] for o in info["auth"]["objects"]] == ["PIN", "OTP"]
    single = csc_client.post("/csc/v2/credentials/info", json={"credentialID": holder.credential_id}).json()
    assert len(single["cert"]["certificates"]) == 1 and "auth" not in single and "serialNumber" not in single["cert"]


def test_info_errors_have_the_csc_shape(csc_client):
    unknown = csc_client.post("/csc/v2/credentials/info", json={"credentialID": "no-such-credential"})
    assert unknown.status_code == 400  # as the CSC API answers it, not 404
    assert unknown.json()["error"] == "invalid_request"
    assert unknown.json()["error_description"].startswith("Invalid parameter credentialID")
    missing = csc_client.post("/csc/v2/credentials/info", json={})
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    assert "credentialID" in missing.json()["error_description"]
    wrong = csc_client.post("/csc/v2/credentials/info", json={"credentialID": "x", "certificates": "all"})
    assert wrong.status_code == 400
    not_json = csc_client.post("/csc/v2/credentials/info", content=b"{not json",
                               headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["error"] == "invalid_request"
    no_path = csc_client.post("/csc/v2/credentials/nothing", json={})
    assert no_path.status_code == 404 and set(no_path.json()) >= {"error", "error_description"}


def test_authorize_gives_a_sad_for_the_hashes(csc_client, csc_service, holder):
    digests = [hashlib.sha256(f"page {i}".encode()).digest() for i in range(3)]
    answer = csc_client.post("/csc/v2/credentials/authorize", json=authorize_body(holder, digests))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"SAD", "expiresIn"}
    assert 0 < body["expiresIn"] <= csc_service.config.authorization.token_lifetime_seconds


def test_wrong_factors_unknown_and_others_credentials_are_refused_alike(csc_server, csc_client, csc_service,
                                                                        holder, csc_clock):
    from tests.csc.conftest import certified_holder

    digest = [hashlib.sha256(b"x").digest()]
    wrong_pin = csc_client.post("/csc/v2/credentials/authorize", json=authorize_body(
        holder, digest, authData=[{"id": "PIN", "value": "wrong-Password-1"}, {"id": "OTP", "value": holder.otp()}]))
    unknown = csc_client.post("/csc/v2/credentials/authorize",
                              json=authorize_body(holder, digest, credentialID="no-such-credential"))
    other = certified_holder(csc_service, csc_clock)
    narrow, api_key = csc_service.applications.create(f"narrow-{holder.username}", accounts_served=(holder.username,))
    with csc_server.client(headers=login(csc_server, narrow, api_key)) as narrow_client:
        others = narrow_client.post("/csc/v2/credentials/authorize", json=authorize_body(other, digest))
    for answer in (wrong_pin, unknown, others):
        assert answer.status_code == 400, answer.text
    assert wrong_pin.json() == unknown.json() == others.json()
    assert wrong_pin.json()["error"] == "invalid_request"


@pytest.mark.parametrize("change, words", [
    ({"numSignatures": 2}, "numSignatures"),
    ({"hashes": ["not base64!"]}, "base64"),
    ({"hashes": []}, "hashes"),
    ({"hashAlgorithmOID": "1.2.3"}, "hashAlgorithmOID"),
    ({"authData": [{"id": "OTP", "value": "123456"}]}, "PIN"),
])
def test_authorize_refuses_malformed_requests(csc_client, holder, change, words):
    body = authorize_body(holder, [hashlib.sha256(b"x").digest()], **change)
    answer = csc_client.post("/csc/v2/credentials/authorize", json=body)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"
    assert words in answer.json()["error_description"]


@pytest.mark.parametrize("path, change, words", [
    ("/csc/v2/credentials/authorize", {"numSignatures": True}, "numSignatures"),
    ("/csc/v2/credentials/authorize", {"numSignatures": "1"}, "numSignatures"),
    ("/csc/v2/credentials/authorize", {"numSignatures": 1.0}, "numSignatures"),
    ("/csc/v1/credentials/authorize", {"numSignatures": True}, "numSignatures"),
    ("/csc/v2/credentials/info", {"certInfo": "yes"}, "certInfo"),
])
def test_a_parameter_of_another_json_type_is_refused_not_converted(csc_client, holder, path, change, words):
    """CSC: "Missing (or invalid type) integer parameter numSignatures": true or "1" is no count,
    and no SAD is issued for it even with the right factors."""
    digest = hashlib.sha256(b"typed").digest()
    body = authorize_body(holder, [digest], **change)
    if path.startswith("/csc/v1"):
        body |= {"hash": body.pop("hashes"), "PIN": holder.password, "OTP": body.pop("authData")[1]["value"]}
    answer = csc_client.post(path, json=body)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request", answer.text
    assert words in answer.json()["error_description"]


def test_extend_transaction_is_refused_as_the_spec_allows(csc_client, holder):
    answer = csc_client.post("/csc/v2/credentials/extendTransaction",
                             json={"credentialID": holder.credential_id, "SAD": "anything"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"
    assert "authorize again" in answer.json()["error_description"]


def test_unknown_and_others_credentials_get_one_answer_naming_no_key(csc_server, csc_client, csc_service, csc_clock,
                                                                     csc_application, holder):
    from sqlalchemy import delete

    from signserver.store.schema import signing_packages
    from tests.csc.conftest import certified_holder

    other = certified_holder(csc_service, csc_clock)
    narrow, api_key = csc_service.applications.create(f"narrow-info-{holder.username}",
                                                      accounts_served=(holder.username,))
    with csc_server.client(headers=login(csc_server, narrow, api_key)) as narrow_client:
        not_yours = narrow_client.post("/csc/v2/credentials/info", json={"credentialID": other.credential_id})
        no_such = narrow_client.post("/csc/v2/credentials/info", json={"credentialID": "c" * 32})
        not_yours_sign = narrow_client.post("/csc/v2/signatures/signHash", json={
            "credentialID": other.credential_id, "SAD": "x" * 43, "hashes": [b64(bytes(32))],
            "signAlgo": "1.2.840.10045.4.3.2"})
    # A credential whose key is gone: its signing data package erased behind the server's back.
    key_gone_holder = certified_holder(csc_service, csc_clock)
    key_id = csc_service.credentials.credential(csc_application[0], key_gone_holder.credential_id).key_id
    with csc_service.database.transaction() as conn:
        conn.execute(delete(signing_packages).where(signing_packages.c.key_id == key_id))
    key_gone = csc_client.post("/csc/v2/credentials/info", json={"credentialID": key_gone_holder.credential_id})
    for answer in (not_yours, no_such, not_yours_sign, key_gone):
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "invalid_request"
    assert not_yours.json() == no_such.json() == not_yours_sign.json() == key_gone.json()
    assert key_id not in key_gone.text and other.credential_id not in not_yours.text


def test_key_not_found_never_names_the_key():
    import json

    from signserver.errors import KeyNotFound
    from signserver.http.csc.errors import signserver_error_response

    answer = signserver_error_response(KeyNotFound("no key with id 0123abcd on the token"))
    assert answer.status_code == 400 and "0123abcd" not in answer.body.decode()
    assert json.loads(answer.body)["error"] == "invalid_request"


def test_a_credential_without_a_certificate_has_no_cert_status(csc_server, csc_service, csc_client):
    from tests.conftest import enrol

    created, _ = enrol(csc_service)  # its credential has no certificate yet
    credential_id = created.credential.id
    info = csc_client.post("/csc/v2/credentials/info", json={"credentialID": credential_id, "certInfo": True})
    assert info.status_code == 200, info.text
    assert "cert" not in info.json()
    info_v1 = csc_client.post("/csc/v1/credentials/info", json={"credentialID": credential_id})
    assert info_v1.status_code == 200 and "cert" not in info_v1.json()
    application, api_key = csc_service.applications.create(f"named-{created.account.username}",
                                                           accounts_served=(created.account.username,))
    with csc_server.client(headers=login(csc_server, application, api_key)) as client:
        listed = client.post("/csc/v2/credentials/list", json={"userID": created.account.username,
                                                               "credentialInfo": True}).json()
        valid_only = client.post("/csc/v2/credentials/list", json={"userID": created.account.username,
                                                                   "onlyValid": True}).json()
    assert listed["credentialIDs"] == [credential_id] and "cert" not in listed["credentialInfos"][0]
    assert valid_only["credentialIDs"] == []  # no valid signature comes of it


def test_a_revoked_certificate_is_reported_revoked(csc_client, csc_service, holder):
    csc_service.ca.revoke(format(holder.certificate.serial_number, "x"), "keyCompromise", "operator:test")
    info = csc_client.post("/csc/v2/credentials/info", json={"credentialID": holder.credential_id}).json()
    assert info["cert"]["status"] == "revoked"


def test_the_cert_status_is_the_cas_word_for_the_certificate(csc_client, csc_service, holder):
    from types import SimpleNamespace

    from signserver.http.csc.credentials import certificate_body

    details = SimpleNamespace(certificates=(holder.certificate,))
    for status in ("valid", "expired", "revoked"):
        assert certificate_body(details, status, "none", False) == {"status": status}
    assert certificate_body(SimpleNamespace(certificates=()), None, "single", True) is None


@pytest.mark.parametrize("path", ["/csc/v2/credentials/authorize", "/csc/v2/credentials/extendTransaction",
                                  "/csc/v1/credentials/authorize", "/csc/v1/credentials/extendTransaction"])
def test_answers_with_a_sad_are_never_cached(csc_client, holder, path):
    digest = hashlib.sha256(b"no-store").digest()
    if path == "/csc/v1/credentials/authorize":
        body = {"credentialID": holder.credential_id, "numSignatures": 1, "hash": [b64(digest)],
                "PIN": holder.password, "OTP": holder.otp()}
    elif path.endswith("authorize"):
        body = authorize_body(holder, [digest])
    else:
        body = {"credentialID": holder.credential_id, "SAD": "x"}
    answer = csc_client.post(path, json=body)
    if path.endswith("authorize"):
        assert answer.status_code == 200 and answer.json()["SAD"], answer.text
    assert answer.headers["cache-control"] == "no-store" and answer.headers["pragma"] == "no-cache"
