"""Seal images in the CSC API's signDoc: one that cannot be decoded is refused, naming sealImage,
before the SAD (or the holder's OTP) is spent; one of a mode pyHanko does not draw is converted."""

from __future__ import annotations

import io

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


def test_an_undecodable_seal_leaves_the_sad_usable(csc_client, csc_service, csc_application, holder):
    pdf = sample_pdf(1)
    sad = sad_for(csc_service, csc_application[0], holder, pdf)
    refused = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                              "documents": [document(pdf, sealImage=b64(truncated_png()))]})
    assert_seal_refused(refused)
    signed = signed_pdf(csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                                        "documents": [document(pdf, sealImage=b64(good_seal()))]}))
    seal_in(signed)


def test_an_undecodable_seal_leaves_the_otp_of_auth_data_usable(csc_client, holder):
    pdf, code = sample_pdf(1), holder.otp()
    auth_data = [{"id": "PIN", "value": holder.password}, {"id": "OTP", "value": code}]
    refused = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "authData": auth_data,
                                              "documents": [document(pdf, sealImage=b64(truncated_png()))]})
    assert_seal_refused(refused)
    # The same OTP (each code is accepted once) signs with a good seal.
    signed = signed_pdf(csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "authData": auth_data,
                                                        "documents": [document(pdf, sealImage=b64(good_seal()))]}))
    seal_in(signed)


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
