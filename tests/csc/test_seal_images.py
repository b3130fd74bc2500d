"""Seal images in the CSC API's signDoc: one that cannot be decoded is refused, naming sealImage,
before the SAD (or the holder's OTP) is spent; one of a mode pyHanko does not draw is converted."""

from __future__ import annotations

import io
import json

import pytest

from signserver.pades.sample import sample_pdf
from tests.csc.conftest import b64
from tests.csc.test_documents import SIGN_DOC, assert_csc_error, document, sad_for, signed_pdf
from tests.pades.test_seal_images import CONVERTIBLE, good_seal, seal_in, truncated_png


def assert_seal_refused(answer) -> None:
    assert_csc_error(answer, 400, "invalid_request")
    body = answer.json()
    assert body["error_reason"] == "INVALID_ARGUMENT"
    assert body["error_description"].startswith("sealImage: the seal image cannot be decoded: "), body


@pytest.mark.parametrize("authorised_by", ["SAD", "authData"])
def test_an_undecodable_seal_leaves_the_authorisation_usable(csc_client, csc_service, csc_application, holder,
                                                            authorised_by):
    pdf = sample_pdf(1)
    if authorised_by == "SAD":
        authorisation = {"SAD": sad_for(csc_service, csc_application[0], holder, pdf)}
    else:
        authorisation = {"authData": [{"id": "PIN", "value": holder.password}, {"id": "OTP", "value": holder.otp()}]}

    def sign_doc(seal: bytes):
        return csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, **authorisation,
                                               "documents": [document(pdf, sealImage=b64(seal))]})

    assert_seal_refused(sign_doc(truncated_png()))
    # The same SAD, or the same OTP (each code is accepted once), signs with a good seal.
    seal_in(signed_pdf(sign_doc(good_seal())))


@pytest.mark.parametrize("name", sorted(CONVERTIBLE))
def test_a_seal_of_a_mode_pyhanko_does_not_draw_is_converted_and_drawn(csc_client, csc_service, csc_application,
                                                                       holder, name):
    pdf = sample_pdf(1)
    sad = sad_for(csc_service, csc_application[0], holder, pdf)
    signed = signed_pdf(csc_client.post(SIGN_DOC, json={
        "credentialID": holder.credential_id, "SAD": sad,
        "documents": [document(pdf, sealImage=b64(CONVERTIBLE[name]()))]}))
    # Trust is checked at the module's clock, which moves past the real time: intact and valid here.
    [report] = csc_service.pades.verify_pdf(io.BytesIO(signed)).signatures
    assert report.intact and report.valid, report.summary
    assert seal_in(signed)["/ColorSpace"] in ("/DeviceRGB", "/DeviceGray")


@pytest.mark.parametrize("option, value, named", [
    ("verificationURL", "https://example.mo/" + "驗" * 1900, "verificationURL: "),  # too long for a QR code
    ("reason", "\ud800", "documents[0].stamp.reason should be a valid string"),  # a lone surrogate: no text
    ("fieldName", "\ud800", "documents[0].stamp.fieldName should be a valid string")])
def test_a_refused_stamp_option_is_named_as_the_csc_api_names_it(csc_client, csc_service, csc_application, holder,
                                                                   option, value, named):
    pdf = sample_pdf(1)
    body = {"credentialID": holder.credential_id, "SAD": sad_for(csc_service, csc_application[0], holder, pdf),
            "documents": [document(pdf, **{option: value})]}
    # As JSON carries it: a lone surrogate escaped (\ud800), which no UTF-8 body can hold as such.
    answer = csc_client.post(SIGN_DOC, content=json.dumps(body), headers={"content-type": "application/json"})
    assert_csc_error(answer, 400, "invalid_request")
    assert answer.json()["error_description"].startswith(named), answer.json()
