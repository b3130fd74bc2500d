"""info, auth/login, auth/revoke and OAuth 2.0 client credentials over real HTTPS."""

from __future__ import annotations

import ssl

import httpx

from tests.csc.conftest import basic


def test_info_needs_no_login_and_names_the_methods(csc_server):
    with csc_server.client() as client:
        answer = client.post("/csc/v2/info", json={"lang": "en-US"})
    assert answer.status_code == 200
    info = answer.json()
    assert info["specs"].startswith("2.") and info["authType"] == ["basic", "oauth2client"]
    assert {"credentials/authorize", "signatures/signHash"} <= set(info["methods"])
    assert info["oauth2"] == csc_server.url


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
        assert answer.status_code == 401
        assert answer.json()["error"] == "invalid_token"
    assert wrong_key.json() == wrong_name.json()


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
