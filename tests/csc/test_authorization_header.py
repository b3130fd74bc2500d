"""The bearer Authorization header of the CSC API as RFC 6750 section 3 and 3.1 answer it: a
malformed request is 400 invalid_request, a token the server does not accept 401 invalid_token,
and a request without bearer credentials a bare Bearer challenge, over the real HTTPS front."""

from __future__ import annotations

import pytest


def info(client, *authorization: str):
    headers = [(b"Authorization", value.encode("utf-8")) for value in authorization]
    return client.post("/csc/v2/credentials/info", headers=headers, json={"credentialID": "c"})


@pytest.mark.parametrize("authorization", ["Bearer", "bearer", "Bearer two words",
                                           'Bearer "quoted"', "Bearer tok,en", "@@@ x", "Bearer 漢字"])
def test_a_malformed_authorization_header_is_a_malformed_request(csc_server, authorization):
    with csc_server.client() as client:
        answer = info(client, authorization)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"
    assert "Authorization" in answer.json()["error_description"]
    assert answer.headers["www-authenticate"].startswith('Bearer error="invalid_request"')


def test_two_authorization_headers_are_a_malformed_request(csc_server, access_token):
    with csc_server.client() as client:
        answer = info(client, f"Bearer {access_token}", f"Bearer {access_token}")
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request", answer.text
    assert answer.headers["www-authenticate"].startswith('Bearer error="invalid_request"')


@pytest.mark.parametrize("authorization", ["Bearer not-a-token", "Bearer bm90LWEtdG9rZW4=", "BEARER x.y~z+/"])
def test_a_well_formed_token_the_server_does_not_know_is_an_invalid_token(csc_server, authorization):
    with csc_server.client() as client:
        answer = info(client, authorization)
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_token", answer.text
    assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize("authorization", [None, "Token x", "Basic Zm9vOmJhcg==", "Negotiate"])
def test_a_request_without_bearer_credentials_gets_a_challenge_without_an_error_code(csc_server, authorization):
    # RFC 6750 3: no credentials, or an unsupported scheme: the challenge says how, not what failed.
    with csc_server.client() as client:
        answer = info(client, *([authorization] if authorization else []))
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_token", answer.text
    assert answer.headers["www-authenticate"] == "Bearer"


def test_a_valid_token_is_still_accepted(csc_server, access_token):
    with csc_server.client() as client:
        answer = info(client, f"bearer  {access_token}")
    assert answer.status_code == 400 and "credentialID" in answer.json()["error_description"], answer.text
