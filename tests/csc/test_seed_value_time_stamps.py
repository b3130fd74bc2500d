"""signDoc with a document whose signature field's seed value names a time-stamping authority:
the server never calls the address a client's document names, whatever the SAD."""

from __future__ import annotations

import pytest

from tests.csc.test_documents import SIGN_DOC, document
from tests.pades.field_documents import asking_for_time_stamp, listener


@pytest.mark.parametrize("level", ["Ades-B-B", "Ades-B-T"])
def test_sign_doc_with_a_made_up_sad_never_calls_the_address_a_field_names(csc_client, holder, level):
    with listener() as (url, posted):
        answer = csc_client.post(SIGN_DOC, json={
            "credentialID": holder.credential_id, "SAD": "not-a-sad-anyone-issued",
            "documents": [document(asking_for_time_stamp(url), level, fieldName="Sig1")]})
    assert 400 <= answer.status_code < 500, answer.text
    assert posted == []
