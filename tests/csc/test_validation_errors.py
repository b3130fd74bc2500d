"""What a CSC request the API cannot take is told, over real HTTPS: 400 invalid_request with the
reason INVALID_ARGUMENT, and a description a developer reads as a sentence: the body that is not
JSON and where, the field by its path (``authData[0].id``), what is wrong with it; never the
values the client sent."""

from __future__ import annotations

import pytest

from signserver.http.csc.errors import validation_problem

AUTHORIZE = "/csc/v2/credentials/authorize"


def refusal(answer) -> str:
    """The description of a CSC refusal of a malformed request."""
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert (body["error"], body["error_reason"]) == ("invalid_request", "INVALID_ARGUMENT"), body
    return body["error_description"]


@pytest.mark.parametrize("content, said", [
    (b"{not json", "the request body is not valid JSON: expecting property name enclosed in double quotes "
                   "at line 1, column 2"),
    (b'{"credentialID": "c"} x', "the request body is not valid JSON: extra data at line 1, column 23"),
    (b'\n\n{"credentialID" 1}', "the request body is not valid JSON: expecting ':' delimiter at line 3, column 17"),
])
def test_a_body_that_is_not_json_is_told_so_and_where(csc_client, content, said):
    assert refusal(csc_client.post(AUTHORIZE, content=content, headers={"Content-Type": "application/json"})) == said


def test_a_body_that_is_no_json_object_is_told_so(csc_client):
    for content in (b"[1, 2]", b'"credentialID"', b"42"):
        description = refusal(csc_client.post(AUTHORIZE, content=content, headers={"Content-Type": "application/json"}))
        assert description == "the request body should be a JSON object"


def test_a_missing_body_is_told_so(csc_client):
    assert refusal(csc_client.post(AUTHORIZE, headers={"Content-Type": "application/json"})) == (
        "the request has no body: send a JSON object")


def test_json_sent_as_another_type_is_told_the_content_type(csc_client):
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        description = refusal(csc_client.post(AUTHORIZE, content=b'{"credentialID": "c", "numSignatures": 1}',
                                              headers={"Content-Type": content_type}))
        assert description == "the request body is read as JSON only with Content-Type: application/json"


def test_missing_fields_are_named(csc_client):
    assert refusal(csc_client.post(AUTHORIZE, json={})) == "credentialID is required; numSignatures is required"


def test_fields_of_the_wrong_type_are_named_by_their_path(csc_client):
    description = refusal(csc_client.post(AUTHORIZE, json={
        "credentialID": {"nested": {"deep": "private-value-1"}}, "numSignatures": "2",
        "hashes": ["aGFzaA==", 3], "authData": [{"id": 1}]}))
    assert description == ("credentialID should be a valid string; numSignatures should be a valid integer; "
                           "hashes[1] should be a valid string; authData[0].id should be a valid string; "
                           "authData[0].value is required")
    assert "private-value-1" not in description


def test_values_out_of_bounds_are_named_without_the_value(csc_client):
    description = refusal(csc_client.post(AUTHORIZE, json={"credentialID": "v" * 300, "numSignatures": 0}))
    assert description == ("credentialID should have at most 64 characters; "
                           "numSignatures should be greater than or equal to 1")


def test_a_list_given_an_object_is_named(csc_client):
    description = refusal(csc_client.post(AUTHORIZE, json={"credentialID": "c", "numSignatures": 1,
                                                            "authData": {"id": "PIN", "value": "secret-pin-7"}}))
    assert description == "authData should be a valid list"
    assert "secret-pin-7" not in description


def test_many_problems_are_counted_beyond_the_first_five(csc_client):
    description = refusal(csc_client.post(AUTHORIZE, json={
        "credentialID": 1, "numSignatures": "x", "hashes": [1, 2, 3, 4, 5]}))
    assert description.endswith("; and 2 more")
    assert description.count(";") == 5


def test_a_path_part_the_client_chose_is_shown_short_and_escaped():
    # A key of the client's own (a map's key, a field a model forbids) is shown as a short, escaped
    # excerpt, never as sent.
    key = "<script>\n" + "k" * 200
    said = validation_problem({"type": "string_type", "loc": ("body", "documents", 0, key),
                               "msg": "Input should be a valid string", "input": 3})
    assert "<script>\n" not in said and "k" * 40 not in said
    assert said.startswith('documents[0]["<script>\\nkkk') and said.endswith(" should be a valid string")
