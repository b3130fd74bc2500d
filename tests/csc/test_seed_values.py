"""signDoc with a document whose signature field states seed values: the server never calls the
time-stamping authority a client's document names, whatever the SAD, and refuses a field the
signature would break before the holder's factors are checked."""

from __future__ import annotations

import pytest

from tests.csc.test_documents import SIGN_DOC, document
from tests.pades.field_documents import asking_for_time_stamp, listener, with_empty_field


@pytest.mark.parametrize("level", ["Ades-B-B", "Ades-B-T"])
def test_sign_doc_with_a_made_up_sad_never_calls_the_address_a_field_names(csc_client, holder, level):
    with listener() as (url, posted):
        answer = csc_client.post(SIGN_DOC, json={
            "credentialID": holder.credential_id, "SAD": "not-a-sad-anyone-issued",
            "documents": [document(asking_for_time_stamp(url), level, fieldName="Sig1")]})
    assert 400 <= answer.status_code < 500, answer.text
    assert posted == []


@pytest.mark.parametrize(("seed_values", "refusal"), [
    (b"/DigestMethod [/SHA512] /Ff 64", "requires the digest algorithm SHA512"),
    (b"/TimeStamp << /Ff 1 >>", "requires a time-stamp"),  # what the level decides, B-B here
], ids=["digest", "time-stamp"])
def test_sign_doc_refuses_a_field_the_signature_would_break_before_the_holders_factors(csc_client, holder,
                                                                                       seed_values, refusal):
    answer = csc_client.post(SIGN_DOC, json={
        "credentialID": holder.credential_id,
        "authData": [{"id": "PIN", "value": "not the PIN"}, {"id": "OTP", "value": "000000"}],
        "documents": [document(with_empty_field(seed_values), "Ades-B-B", fieldName="Sig1")]})
    assert answer.status_code == 400, answer.text
    assert refusal in answer.json()["error_description"]
