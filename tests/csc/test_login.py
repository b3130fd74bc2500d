"""info, auth/login, auth/revoke and OAuth 2.0 client credentials over real HTTPS."""

from __future__ import annotations

import json
import ssl

import httpx
import pytest
from cryptography import x509

from tests.csc.conftest import basic, client_certificate_context


def test_info_needs_no_login_and_names_the_methods(csc_server):
    with csc_server.client() as client:
        answer = client.post("/csc/v2/info", json={"lang": "en-US"})
    assert answer.status_code == 200
    info = answer.json()
    assert info["specs"].startswith("2.") and info["authType"] == ["basic", "oauth2client"]
    assert {"credentials/authorize", "signatures/signHash"} <= set(info["methods"])
    assert info["oauth2"] == csc_server.context.service.config.csc.base_url()


def test_info_names_the_pades_envelope_property_sign_doc_makes(csc_server):
    """PAdES's envelope properties are Certification and Revision; signDoc makes approval
    signatures (Revision) only, and refuses any other."""
    with csc_server.client() as client:
        info = client.post("/csc/v2/info", json={}).json()
    formats = info["signature_formats"]
    assert formats["formats"] == ["P"] and formats["envelope_properties"] == [["Revision"]]


def test_info_builds_its_urls_from_configuration_never_from_the_host_header(csc_server):
    with csc_server.client() as client:
        forged = client.post("/csc/v2/info", json={}, headers={"Host": "evil.example"}).json()
        forged_v1 = client.post("/csc/v1/info", json={}, headers={"Host": "evil.example"}).json()
    configured = csc_server.context.service.config.csc.base_url()
    for info in (forged, forged_v1):
        assert info["oauth2"] == configured and info["logo"].startswith(configured + "/")
        assert "evil.example" not in str(info)


def test_login_with_the_api_key_gives_a_token_every_endpoint_accepts(csc_server, csc_application):
    application, api_key = csc_application
    with csc_server.client() as client:
        answer = client.post("/csc/v2/auth/login", headers=basic(application.name, api_key), json={})
        assert answer.status_code == 200
        token = answer.json()["access_token"]
        assert len(token) >= 43 and answer.json()["expires_in"] == 3600
        listed = client.post("/csc/v2/credentials/list", headers={"Authorization": f"Bearer {token}"},
                             json={"userID": "nobody"})
        assert listed.status_code != 401


def test_login_refuses_a_wrong_key_or_name_alike(csc_server, csc_application):
    application, api_key = csc_application
    with csc_server.client() as client:
        wrong_key = client.post("/csc/v2/auth/login", headers=basic(application.name, api_key + "x"))
        wrong_name = client.post("/csc/v2/auth/login", headers=basic("other-app", api_key))
        none = client.post("/csc/v2/auth/login")
    for answer in (wrong_key, wrong_name, none):
        # RFC 6749 5.2: a client that failed to authenticate, with the scheme it may use.
        assert answer.status_code == 401
        assert answer.json()["error"] == "invalid_client"
        assert answer.headers["www-authenticate"].startswith("Basic")
    assert wrong_key.json() == wrong_name.json()


@pytest.mark.parametrize("credentials", [b"\xe9\xe9\xe9\xe9", b"not base64!", b"//79/Q==", b"bm8tY29sb24="],
                         ids=["not-ascii", "not-base64", "not-utf8", "no-colon"])
@pytest.mark.parametrize("path", ["/csc/v2/auth/login", "/csc/v1/auth/login", "/oauth2/token"])
def test_login_refuses_malformed_basic_credentials_as_a_wrong_key(csc_server, path, credentials):
    """Basic credentials that are no base64 of UTF-8 name:key, even of bytes no ASCII (a header
    is read as Latin-1), are a client that failed to authenticate, never a server error."""
    form = path == "/oauth2/token"
    with csc_server.client() as client:
        answer = client.post(path, headers={"Authorization": b"Basic " + credentials,
                                            **({"Content-Type": "application/x-www-form-urlencoded"} if form else {})},
                             **({"content": b"grant_type=client_credentials"} if form else {"json": {}}))
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "invalid_client"
    assert answer.headers["www-authenticate"].startswith("Basic")


def test_requests_without_a_valid_token_are_refused(csc_server):
    with csc_server.client() as client:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Token x"}):
            answer = client.post("/csc/v2/credentials/info", headers=headers, json={"credentialID": "c"})
            assert answer.status_code == 401, headers
            assert answer.json()["error"] == "invalid_token"
            assert answer.headers["www-authenticate"].startswith("Bearer")


def test_a_revoked_token_is_refused_at_once(csc_server, csc_application):
    application, api_key = csc_application
    with csc_server.client() as client:
        token = client.post("/csc/v2/auth/login", headers=basic(application.name, api_key)).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert client.post("/csc/v2/credentials/list", headers=bearer, json={"userID": "x"}).status_code != 401
        revoked = client.post("/csc/v2/auth/revoke", headers=bearer, json={"token": token})
        assert revoked.status_code == 204 and revoked.content == b""
        again = client.post("/csc/v2/credentials/list", headers=bearer, json={"userID": "x"})
    assert again.status_code == 401


@pytest.mark.parametrize("path", ["/csc/v2/auth/revoke", "/csc/v1/auth/revoke"])
def test_revoking_what_is_no_token_leaves_the_callers_token_and_answers_as_for_an_unknown_one(
        csc_server, csc_application, path):
    """RFC 7009 2.2: a token the server never issued is answered as a revoked one; text no token
    has the form of (a lone surrogate, no UTF-8 can hold; spaces) included."""
    application, api_key = csc_application
    with csc_server.client() as client:
        token = client.post("/csc/v2/auth/login", headers=basic(application.name, api_key)).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        for text in ("\ud800", "not a token", "", token + "x"):
            answer = client.post(path, headers=bearer | {"Content-Type": "application/json"},
                                 content=json.dumps({"token": text}).encode("ascii"))  # a surrogate as \ud800
            assert answer.status_code == 204, (text, answer.text)
        assert client.post("/csc/v2/credentials/list", headers=bearer, json={"userID": "x"}).status_code != 401


def test_a_token_is_stored_only_hashed(csc_service, access_token):
    from sqlalchemy import select

    from signserver.store.schema import csc_access_tokens

    with csc_service.database.read() as conn:
        stored = conn.execute(select(csc_access_tokens.c.token_hash)).scalars().all()
    assert stored and access_token not in stored and all(len(h) == 64 for h in stored)


def test_oauth2_client_credentials(csc_server, csc_application):
    application, api_key = csc_application
    form = {"grant_type": "client_credentials", "client_id": application.name, "client_secret": api_key,
            "scope": "service"}
    with csc_server.client() as client:
        answer = client.post("/oauth2/token", data=form)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["token_type"] == "Bearer" and body["scope"] == "service"
        assert answer.headers["cache-control"] == "no-store"
        bearer = {"Authorization": f"Bearer {body['access_token']}"}
        assert client.post("/csc/v2/credentials/list", headers=bearer, json={"userID": "x"}).status_code != 401
        with_basic = client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                                 headers=basic(application.name, api_key))
        assert with_basic.status_code == 200
        wrong = client.post("/oauth2/token", data={**form, "client_secret": "nope"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
        grant = client.post("/oauth2/token", data={**form, "grant_type": "password"})
        assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
        scope = client.post("/oauth2/token", data={**form, "scope": "credential"})
        assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"


def test_login_with_a_client_certificate(csc_server, csc_service, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from signserver.accounts.applications import certificate_fingerprint

    key = ec.generate_private_key(ec.SECP256R1())
    issued = csc_service.ca.issue_service_certificate("client-asp", "csc-cert-app", key.public_key(), "operator:test")
    csc_service.applications.set_client_certificate("csc-cert-app", certificate_fingerprint(issued.certificate))
    (tmp_path / "client.pem").write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "client-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.create_default_context(cafile=str(csc_server.tls.cert_file))
    context.load_cert_chain(tmp_path / "client.pem", tmp_path / "client-key.pem")
    with httpx.Client(base_url=csc_server.url, verify=context, timeout=60) as client:
        answer = client.post("/csc/v2/auth/login")
        assert answer.status_code == 200, answer.text
        # The certificate alone authenticates every request too.
        assert client.post("/csc/v2/credentials/list", json={"userID": "x"}).status_code != 401


def _login(client, **options) -> str:
    answer = client.post("/csc/v2/auth/login", **options)
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def _lists(client, token: str) -> int:
    return client.post("/csc/v2/credentials/list", headers={"Authorization": f"Bearer {token}"},
                       json={"userID": "x"}).status_code


def test_a_token_from_a_certificate_login_is_accepted_only_with_that_certificate(
        csc_server, csc_service, csc_application, tmp_path):
    mine = client_certificate_context(csc_server, csc_service, "csc-bound-app", tmp_path / "mine")
    others = client_certificate_context(csc_server, csc_service, "csc-bound-other", tmp_path / "others")
    with httpx.Client(base_url=csc_server.url, verify=mine, timeout=60) as with_mine, \
            httpx.Client(base_url=csc_server.url, verify=others, timeout=60) as with_others, \
            csc_server.client() as without:
        token = _login(with_mine)
        assert _lists(with_mine, token) != 401
        # RFC 8705: the token alone, or over another certificate's connection, is refused.
        for client in (without, with_others):
            refused = client.post("/csc/v2/credentials/list", headers={"Authorization": f"Bearer {token}"},
                                  json={"userID": "x"})
            assert refused.status_code == 401 and refused.json()["error"] == "invalid_token", refused.text
        # A token of an API-key login stays usable from any connection of its application.
        application, api_key = csc_application
        by_key = _login(without, headers=basic(application.name, api_key))
        assert _lists(without, by_key) != 401


def test_the_binding_is_kept_with_the_token(csc_server, csc_service, tmp_path):
    from sqlalchemy import select

    from signserver.accounts.applications import certificate_fingerprint
    from signserver.store.schema import csc_access_tokens

    context = client_certificate_context(csc_server, csc_service, "csc-bound-kept", tmp_path)
    with httpx.Client(base_url=csc_server.url, verify=context, timeout=60) as client:
        token = _login(client)
    application = csc_service.applications.authenticate(
        certificate_sha256=certificate_fingerprint(x509.load_pem_x509_certificate((tmp_path / "client.pem").read_bytes())))
    with csc_service.database.read() as conn:
        bound = conn.execute(select(csc_access_tokens.c.certificate_sha256).where(
            csc_access_tokens.c.application_id == application.id)).scalars().all()
    assert bound == [application.client_certificate_sha256] and token not in bound


def test_an_api_key_over_another_applications_certificate_is_refused_alike(
        csc_server, csc_service, csc_application, tmp_path):
    application, api_key = csc_application
    others = client_certificate_context(csc_server, csc_service, "csc-key-mismatch", tmp_path)
    form = {"grant_type": "client_credentials", "client_id": application.name, "client_secret": api_key}
    with httpx.Client(base_url=csc_server.url, verify=others, timeout=60) as client, \
            csc_server.client() as without:
        mismatched = client.post("/csc/v2/auth/login", headers=basic(application.name, api_key))
        mismatched_v1 = client.post("/csc/v1/auth/login", headers=basic(application.name, api_key))
        mismatched_oauth = client.post("/oauth2/token", data=form)
        wrong_key = without.post("/csc/v2/auth/login", headers=basic(application.name, api_key + "x"))
    for answer in (mismatched, mismatched_v1, mismatched_oauth):
        assert answer.status_code == 401 and answer.json()["error"] == "invalid_client", answer.text
        assert "access_token" not in answer.json()
    # Never which one is whose: the answer of a wrong key, word for word.
    assert mismatched.json() == mismatched_v1.json() == mismatched_oauth.json() == wrong_key.json()


def test_a_revocation_holds_at_once_on_every_worker(csc_service, csc_application):
    """Two workers: two AccessTokens on one database. The second has just accepted the token."""
    import datetime

    from signserver.accounts.access_tokens import AccessTokens
    from signserver.errors import Unauthenticated

    application = csc_application[0]
    first, second = (AccessTokens(csc_service.database, csc_service.clock, datetime.timedelta(hours=1))
                     for _ in range(2))
    token = first.issue(application).token
    assert second.application_for(token).id == application.id
    assert first.revoke(application, token)
    with pytest.raises(Unauthenticated):
        second.application_for(token)


@pytest.mark.parametrize("path, request_options", [
    ("/csc/v2/auth/login", {}),
    ("/csc/v1/auth/login", {}),
    ("/oauth2/token", {"data": {"grant_type": "client_credentials"}}),
])
def test_answers_with_a_token_are_never_cached(csc_server, csc_application, path, request_options):
    application, api_key = csc_application
    with csc_server.client() as client:
        for headers in (basic(application.name, api_key), basic(application.name, "wrong")):
            answer = client.post(path, headers=headers, **request_options)
            assert answer.headers["cache-control"] == "no-store" and answer.headers["pragma"] == "no-cache"
        assert "cache-control" not in client.post("/csc/v2/info", json={}).headers
