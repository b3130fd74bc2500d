"""signatures/signDoc and signatures/timestamp over real HTTPS, on the real token."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import secrets
import subprocess

import pytest
from asn1crypto import cms, tsp
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
from pyhanko_certvalidator import ValidationContext

from signserver.errors import AuthenticationFailed
from signserver.hsm.algorithms import HashAlgorithm
from signserver.pades.sample import sample_pdf
from signserver.secret import Secret
from tests.conftest import have
from tests.csc.conftest import b64, basic

SIGN_DOC = "/csc/v2/signatures/signDoc"


def sad_for(service, application, holder, *documents: bytes) -> str:
    """A SAD for the SHA-256 of each document, as credentials/authorize issues it."""
    digests = [hashlib.sha256(d).digest() for d in documents]
    return service.authorize_credential(application, holder.credential_id, Secret(holder.password), holder.otp(),
                                        HashAlgorithm.SHA256, digests).token


def document(content: bytes, level: str = "Ades-B-B", **stamp) -> dict:
    entry = {"document": b64(content), "signature_format": "P", "conformance_level": level}
    if stamp:
        entry["stamp"] = stamp
    return entry


def signed_pdf(answer) -> bytes:
    assert answer.status_code == 200, answer.text
    [signed] = answer.json()["DocumentWithSignature"]
    return base64.b64decode(signed)


def assert_valid(service, signed: bytes, level: str, tmp_path) -> None:
    """pyHanko's validator (the service's verification) and poppler's pdfsig accept it."""
    [report] = service.pades.verify_pdf(io.BytesIO(signed)).signatures
    assert report.intact and report.valid and report.trusted, report.summary
    assert report.level == level
    if have("pdfsig"):
        path = tmp_path / "signed.pdf"
        path.write_bytes(signed)
        out = subprocess.run(["pdfsig", str(path)], capture_output=True, text=True, timeout=60).stdout
        assert "Signature is Valid." in out, out


def stamp_rect(signed: bytes) -> list[float]:
    [signature] = PdfFileReader(io.BytesIO(signed)).embedded_signatures
    return [float(v) for v in signature.sig_field["/Rect"]]


def assert_csc_error(answer, status: int, error: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == error and body["error_description"], body


def test_sign_doc_at_b_b_with_a_sad_gives_a_valid_pdf_with_the_stamp_asked(csc_client, csc_service, csc_application,
                                                                          holder, tmp_path):
    pdf = sample_pdf(2)
    sad = sad_for(csc_service, csc_application[0], holder, pdf)
    answer = csc_client.post(SIGN_DOC, json={
        "credentialID": holder.credential_id, "SAD": sad,
        "documents": [document(pdf, "Ades-B-B", reason="Approved", page=1, box=[40, 40, 300, 120])]})
    signed = signed_pdf(answer)
    assert signed.startswith(pdf[:8]) and len(signed) > len(pdf)
    assert_valid(csc_service, signed, "B-B", tmp_path)
    assert stamp_rect(signed) == [40.0, 40.0, 300.0, 120.0]  # visible, where asked, on the first page
    first_page = PdfFileReader(io.BytesIO(signed)).root["/Pages"]["/Kids"][0].get_object()
    assert len(first_page.get("/Annots", [])) == 1


def test_sign_doc_at_b_lt_with_auth_data_in_the_same_call(csc_client, csc_service, holder, tmp_path):
    answer = csc_client.post(SIGN_DOC, json={
        "credentialID": holder.credential_id,
        "authData": [{"id": "PIN", "value": holder.password}, {"id": "OTP", "value": holder.otp()}],
        "documents": [document(sample_pdf(1), "Ades-B-LT", visible=False)]})
    signed = signed_pdf(answer)
    assert_valid(csc_service, signed, "B-LT", tmp_path)
    assert stamp_rect(signed) == [0.0, 0.0, 0.0, 0.0]  # invisible, as asked


def test_a_sad_for_another_document_or_spent_is_refused(csc_client, csc_service, csc_application, holder):
    pdf, other = sample_pdf(1), sample_pdf(3)
    sad = sad_for(csc_service, csc_application[0], holder, pdf)
    wrong = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                            "documents": [document(other)]})
    assert_csc_error(wrong, 400, "invalid_request")
    assert csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                           "documents": [document(pdf)]}).status_code == 200
    reused = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                             "documents": [document(pdf)]})
    assert_csc_error(reused, 400, "invalid_request")


def test_a_wrong_password_is_refused_without_naming_the_factor(csc_client, holder):
    answer = csc_client.post(SIGN_DOC, json={
        "credentialID": holder.credential_id,
        "authData": [{"id": "PIN", "value": holder.password + "x"}, {"id": "OTP", "value": holder.otp()}],
        "documents": [document(sample_pdf(1))]})
    assert_csc_error(answer, 400, "invalid_request")
    assert answer.json()["error_description"] == str(AuthenticationFailed())  # the one message for every factor


@pytest.mark.parametrize("change, field", [
    ({"signature_format": "C"}, "signature_format"),
    ({"conformance_level": "Ades-B-XL"}, "conformance_level"),
    ({"document": "not base64!"}, "document"),
    ({"document": ""}, "document"),
])
def test_malformed_documents_are_refused_in_csc_shape(csc_client, holder, change, field):
    entry = document(sample_pdf(1)) | change
    answer = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": "x" * 43,
                                             "documents": [entry]})
    assert_csc_error(answer, 400, "invalid_request")
    assert field in answer.json()["error_description"]


def test_a_document_that_is_not_a_pdf_is_refused(csc_client, csc_service, csc_application, holder):
    junk = b"%PDF-1.7 this is no PDF at all"
    sad = sad_for(csc_service, csc_application[0], holder, junk)
    answer = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                             "documents": [document(junk)]})
    assert_csc_error(answer, 400, "invalid_request")


def test_digests_instead_of_documents_and_no_authorisation_are_refused(csc_client, holder):
    digests = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": "x",
                                              "documentDigests": [{"hashes": [b64(bytes(32))]}]})
    assert_csc_error(digests, 400, "invalid_request")
    unauthorised = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id,
                                                   "documents": [document(sample_pdf(1))]})
    assert_csc_error(unauthorised, 400, "invalid_request")


def _trust(service) -> ValidationContext:
    issuing, root = service.ca.chain()
    return ValidationContext(trust_roots=[asn1_x509.Certificate.load(root.public_bytes(Encoding.DER))],
                             other_certs=[asn1_x509.Certificate.load(issuing.public_bytes(Encoding.DER))],
                             allow_fetching=False)


def test_timestamp_gives_a_token_over_the_hash_with_the_nonce(csc_client, csc_service):
    digest = hashlib.sha256(b"a document's signature value").digest()
    nonce = secrets.token_hex(8)
    answer = csc_client.post("/csc/v2/signatures/timestamp", json={
        "hash": b64(digest), "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1", "nonce": nonce})
    assert answer.status_code == 200, answer.text
    token = cms.ContentInfo.load(base64.b64decode(answer.json()["timestamp"]))
    signed_data = token["content"]
    info = signed_data["encap_content_info"]["content"].parsed
    assert isinstance(info, tsp.TSTInfo)
    assert info["message_imprint"]["hashed_message"].native == digest
    assert info["nonce"].native == int(nonce, 16)
    status = asyncio.run(validate_tst_signed_data(signed_data, _trust(csc_service), lambda algorithm: digest))
    assert status["intact"] and status["valid"] and status["trust_problem_indic"] is None, status


def test_timestamp_takes_the_hash_algorithm_by_the_name_the_csc_api_gives_it(csc_client):
    """CSC names it hashAlgo (as RFC 3161's MessageImprint.hashAlgorithm); hashAlgorithmOID, the
    name of the other methods, is taken too."""
    digest = hashlib.sha384(b"a signature value").digest()
    for name in ("hashAlgo", "hashAlgorithmOID"):
        answer = csc_client.post("/csc/v2/signatures/timestamp", json={"hash": b64(digest), name: "2.16.840.1.101.3.4.2.2"})
        assert answer.status_code == 200, answer.text
        info = cms.ContentInfo.load(base64.b64decode(answer.json()["timestamp"]))["content"]["encap_content_info"]
        assert info["content"].parsed["message_imprint"]["hash_algorithm"]["algorithm"].native == "sha384"
    neither = csc_client.post("/csc/v2/signatures/timestamp", json={"hash": b64(digest)})
    assert_csc_error(neither, 400, "invalid_request")
    assert "hashAlgo" in neither.json()["error_description"]


@pytest.mark.parametrize("nonce", ["-5", "0x10", "1_0", " 10", "+a"])
def test_timestamp_takes_a_nonce_of_hexadecimal_digits_only(csc_client, nonce):
    answer = csc_client.post("/csc/v2/signatures/timestamp", json={
        "hash": b64(bytes(32)), "hashAlgo": "2.16.840.1.101.3.4.2.1", "nonce": nonce})
    assert_csc_error(answer, 400, "invalid_request")
    assert "nonce" in answer.json()["error_description"]


@pytest.mark.parametrize("request_body", [
    {"hash": b64(bytes(20)), "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1"},  # a SHA-1 size digest
    {"hash": b64(bytes(20)), "hashAlgorithmOID": "1.3.14.3.2.26"},  # SHA-1
    {"hash": b64(bytes(32)), "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1", "nonce": "not hex"},
    {"hash": "%%%", "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1"},
])
def test_timestamp_refuses_malformed_requests_in_csc_shape(csc_client, request_body):
    assert_csc_error(csc_client.post("/csc/v2/signatures/timestamp", json=request_body), 400, "invalid_request")


@pytest.mark.parametrize("size", [20, 33, 64, 65, 150])
def test_a_timestamp_hash_of_the_wrong_size_is_told_the_size_wanted(csc_client, size):
    answer = csc_client.post("/csc/v2/signatures/timestamp", json={
        "hash": b64(bytes(size)), "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1"})
    assert_csc_error(answer, 400, "invalid_request")
    assert answer.json()["error_description"] == "hash must be a SHA256 digest (32 bytes)", answer.text


def test_a_sign_algo_of_another_key_family_is_refused_before_the_sad_is_spent(csc_client, csc_service,
                                                                              csc_application, holder):
    pdf = sample_pdf(1)
    sad = sad_for(csc_service, csc_application[0], holder, pdf)
    rsa = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                          "documents": [document(pdf) | {"signAlgo": "1.2.840.113549.1.1.11"}]})
    assert_csc_error(rsa, 400, "invalid_request")
    ecdsa = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                            "documents": [document(pdf) | {"signAlgo": "1.2.840.10045.4.3.2"}]})
    assert ecdsa.status_code == 200, ecdsa.text


def test_auth_data_is_refused_to_an_application_limited_to_the_two_step_flow(csc_server, csc_service, holder):
    application, api_key = csc_service.applications.create("csc-two-step", one_call_signing=False)
    with csc_server.client() as client:
        token = client.post("/csc/v2/auth/login", headers=basic(application.name, api_key)).json()["access_token"]
        answer = client.post(SIGN_DOC, headers={"Authorization": f"Bearer {token}"}, json={
            "credentialID": holder.credential_id,
            "authData": [{"id": "PIN", "value": holder.password}, {"id": "OTP", "value": holder.otp()}],
            "documents": [document(sample_pdf(1))]})
    assert_csc_error(answer, 403, "access_denied")


@pytest.mark.parametrize("change", [
    {"stamp": {"page": 9}},  # the document has one page
    {"stamp": {"timeZone": "Mars/Olympus_Mons"}},
    {"stamp": {"box": [40, 40, 60, 50]}},  # too small for the stamp's text
    {"stamp": {"box": [40, 40, 9000, 120]}},  # off the page
    {"stamp": {"sealImage": b64(b"not an image")}},
    {"signAlgo": "1.2.840.10045.4.3.3"},  # ECDSA with SHA-384: signDoc signs with SHA-256
])
def test_a_malformed_sign_doc_leaves_the_sad_usable(csc_client, csc_service, csc_application, holder, change):
    pdf = sample_pdf(1)
    sad = sad_for(csc_service, csc_application[0], holder, pdf)
    refused = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                              "documents": [document(pdf) | change]})
    assert_csc_error(refused, 400, "invalid_request")
    signed = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                             "documents": [document(pdf)]})
    assert signed.status_code == 200, signed.text


def _pdf_with_signature_field(box: tuple[int, int, int, int]) -> bytes:
    """A one-page PDF with an empty signature field "Tiny" of ``box`` on its page."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields

    writer = IncrementalPdfFileWriter(io.BytesIO(sample_pdf(1)))
    fields.append_signature_field(writer, fields.SigFieldSpec("Tiny", on_page=0, box=box))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _pdf_changed(change) -> bytes:
    """A two-page PDF with ``change(pdf)`` made to it (a pikepdf.Pdf)."""
    import pikepdf

    with pikepdf.open(io.BytesIO(sample_pdf(2))) as pdf:
        change(pdf)
        out = io.BytesIO()
        pdf.save(out)
    return out.getvalue()


def _set(name: str, value):
    return lambda pdf: pdf.pages[1].obj.__setitem__(name, value)


@pytest.mark.parametrize("make, stamp, words", [
    # A blank other than the space that the font cannot draw: drawn as a glyph it lacks.
    (lambda: sample_pdf(1), {"caption": "Signed\tdigitally"}, "font cannot draw"),
    (lambda: sample_pdf(1), {"reason": "approved\x0c"}, "font cannot draw"),
    (lambda: sample_pdf(1), {"location": "Lisboa\x85"}, "font cannot draw"),
    # An existing field whose rectangle is too small for the stamp's text.
    (lambda: _pdf_with_signature_field((36, 36, 76, 46)), {"fieldName": "Tiny"}, "documents[1]: the stamp box"),
    # Damage found only when the signature is placed on the page.
    (lambda: _pdf_changed(_set("/Annots", 5)), {"page": 2}, "documents[1]: the document is damaged"),
    (lambda: _pdf_changed(lambda pdf: pdf.Root.__setitem__("/AcroForm", {"/Fields": 5})), {"page": 2},
     "documents[1]: the document is damaged"),
    (lambda: _pdf_changed(lambda pdf: pdf.Root.__setitem__("/Perms", 5)), {"page": 2},
     "documents[1]: the document is damaged"),
], ids=["tab", "form-feed", "next-line", "small-field", "annots-number", "fields-number", "perms-number"])
def test_what_signing_refuses_is_refused_before_the_sad_is_spent(csc_client, csc_service, csc_application, holder,
                                                                  make, stamp, words):
    """Every document is prepared (its field, stamp and digest) before the SAD is spent: what
    only the preparation finds refuses the request with the SAD whole, the good document sent with
    the bad one included."""
    bad, good = make(), sample_pdf(3)
    sad = sad_for(csc_service, csc_application[0], holder, good, bad)
    refused = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                              "documents": [document(good), document(bad, **stamp)]})
    assert_csc_error(refused, 400, "invalid_request")
    assert words in refused.json()["error_description"]
    assert "Object" not in refused.json()["error_description"]  # nothing of pyHanko's classes
    signed = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                             "documents": [document(good)]})
    assert signed.status_code == 200, signed.text


@pytest.mark.parametrize("request_change, document_change, words", [
    ({"returnValidationInfo": True}, {}, "returnValidationInfo"),
    ({}, {"signed_props": [{"attribute_name": "Reason", "attribute_value": b64(b"approved")}]}, "signed_props"),
])
def test_what_sign_doc_does_not_make_is_refused_not_left_out_of_the_answer(
        csc_client, csc_service, csc_application, holder, request_change, document_change, words):
    """validationInfo (info says validationInfo false) and signed attributes of the caller's are
    not made here: a caller that asks is told so before the SAD is spent, rather than handed an
    answer without them."""
    pdf = sample_pdf(1)
    sad = sad_for(csc_service, csc_application[0], holder, pdf)
    refused = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                              "documents": [document(pdf) | document_change]} | request_change)
    assert_csc_error(refused, 400, "invalid_request")
    assert words in refused.json()["error_description"]
    signed = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                             "documents": [document(pdf)], "returnValidationInfo": False})
    assert signed.status_code == 200, signed.text


def test_one_bad_document_spends_nothing_of_the_sad(csc_client, csc_service, csc_application, holder):
    pdf, junk, other = sample_pdf(1), b"%PDF-1.7 this is no PDF at all", sample_pdf(2)
    sad = sad_for(csc_service, csc_application[0], holder, pdf, junk)
    refused = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                              "documents": [document(pdf), document(junk)]})
    assert_csc_error(refused, 400, "invalid_request")
    assert "documents[1]" in refused.json()["error_description"]
    # A document the SAD does not cover refuses the request whole, spending none.
    uncovered = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                                "documents": [document(pdf), document(other)]})
    assert_csc_error(uncovered, 400, "invalid_request")
    twice = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                            "documents": [document(pdf), document(pdf)]})
    assert_csc_error(twice, 400, "invalid_request")
    signed = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                             "documents": [document(pdf)]})
    assert signed.status_code == 200, signed.text


def test_several_documents_under_one_sad(csc_client, csc_service, csc_application, holder):
    first, second = sample_pdf(1), sample_pdf(2)
    sad = sad_for(csc_service, csc_application[0], holder, first, second)
    answer = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "SAD": sad,
                                             "documents": [document(first), document(second, visible=False)]})
    assert answer.status_code == 200, answer.text
    signed = [base64.b64decode(d) for d in answer.json()["DocumentWithSignature"]]
    for original, result in zip((first, second), signed):
        assert result.startswith(original)  # an incremental update of that very document
        # Trust is checked at the module's clock, which the tests before moved past the real time.
        [report] = csc_service.pades.verify_pdf(io.BytesIO(result)).signatures
        assert report.intact and report.valid, report.summary


@pytest.mark.parametrize("sign_algo, params", [
    ("1.2.840.113549.1.1.10", None),  # RSASSA-PSS: PAdES here signs with PKCS#1 v1.5
    ("1.2.840.113549.1.1.10", "pss-sha256"),
    ("1.2.840.113549.1.1.12", None),  # RSA with SHA-384
    ("1.2.840.10045.4.3.2", None),  # ECDSA: another key's
])
def test_sign_doc_never_signs_with_another_algorithm_than_asked(csc_client, csc_service, csc_application, csc_clock,
                                                                sign_algo, params):
    from asn1crypto import algos

    from signserver.hsm.algorithms import KeyAlgorithm
    from tests.csc.conftest import certified_holder

    rsa_holder = certified_holder(csc_service, csc_clock, key_algorithm=KeyAlgorithm.RSA_2048)
    pdf = sample_pdf(1)
    sad = sad_for(csc_service, csc_application[0], rsa_holder, pdf)
    entry = document(pdf) | {"signAlgo": sign_algo}
    if params:
        entry["signAlgoParams"] = b64(algos.RSASSAPSSParams({
            "hash_algorithm": {"algorithm": "sha256"},
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}},
            "salt_length": 32}).dump())
    refused = csc_client.post(SIGN_DOC, json={"credentialID": rsa_holder.credential_id, "SAD": sad,
                                              "documents": [entry]})
    assert_csc_error(refused, 400, "invalid_request")
    pkcs1 = csc_client.post(SIGN_DOC, json={"credentialID": rsa_holder.credential_id, "SAD": sad, "documents": [
        document(pdf) | {"signAlgo": "1.2.840.113549.1.1.11"}]})
    signed = signed_pdf(pkcs1)  # the SAD was not spent by the refusal
    [signature] = PdfFileReader(io.BytesIO(signed)).embedded_signatures
    assert signature.signer_info["signature_algorithm"]["algorithm"].native in ("rsassa_pkcs1v15", "sha256_rsa")


def test_an_unknown_credential_is_refused_as_the_csc_api_says(csc_client):
    answer = csc_client.post(SIGN_DOC, json={"credentialID": "no-such-credential", "SAD": "x" * 43,
                                             "documents": [document(sample_pdf(1))]})
    assert_csc_error(answer, 400, "invalid_request")
    assert answer.json()["error_description"].startswith("Invalid parameter credentialID")


def _stand_in(credential_id: str) -> str:
    """The name an unknown credential's attempts are counted under (SignService.authorize_credential)."""
    return "csc~" + hashlib.sha256(credential_id.encode("utf-8")).hexdigest()[:48]


def test_auth_data_for_an_unknown_existing_or_revoked_credential_is_refused_alike_and_counted(
        csc_client, csc_service, csc_clock):
    """With wrong factors, signDoc tells nothing of the credential: an unknown one, one that
    exists and a revoked one get credentials/authorize's one answer, after the factors' check,
    each attempt counted toward the name's lock as credentials/authorize counts it."""
    from tests.csc.conftest import certified_holder

    existing, revoked = certified_holder(csc_service, csc_clock), certified_holder(csc_service, csc_clock)
    csc_service.ca.revoke(format(revoked.certificate.serial_number, "x"), "superseded", "ra:test")
    unknown = "no-such-credential-" + secrets.token_hex(4)
    pdf = sample_pdf(1)
    wrong = [{"id": "PIN", "value": "Wrong-password-9"}, {"id": "OTP", "value": "000000"}]
    cases = {"unknown": (unknown, _stand_in(unknown)), "existing": (existing.credential_id, existing.username),
             "revoked": (revoked.credential_id, revoked.username)}
    answers = []
    for credential_id, counted_as in cases.values():
        assert csc_service.accounts.lock_state(counted_as).failed_attempts == 0
        authorized = csc_client.post("/csc/v2/credentials/authorize", json={
            "credentialID": credential_id, "numSignatures": 1, "hashes": [b64(hashlib.sha256(pdf).digest())],
            "authData": wrong})
        assert csc_service.accounts.lock_state(counted_as).failed_attempts == 1
        signed = csc_client.post(SIGN_DOC, json={"credentialID": credential_id, "authData": wrong,
                                                 "documents": [document(pdf)]})
        assert csc_service.accounts.lock_state(counted_as).failed_attempts == 2  # counted as authorize counts
        assert signed.json() == authorized.json()
        answers.append((signed.status_code, signed.json()))
    assert answers[0] == answers[1] == answers[2]
    status, body = answers[0]
    assert status == 400 and body["error_reason"] == "AUTHENTICATION_FAILED", body
    assert body["error_description"] == str(AuthenticationFailed())


def test_auth_data_with_a_signalgo_of_another_key_is_refused_only_after_the_factors(csc_client, holder):
    """Which algorithm fits the credential's key tells of the credential: said only to whoever
    has the holder's factors."""
    entry = document(sample_pdf(1)) | {"signAlgo": "1.2.840.113549.1.1.11"}  # RSA: the holder's key is EC
    wrong = csc_client.post(SIGN_DOC, json={
        "credentialID": holder.credential_id, "documents": [entry],
        "authData": [{"id": "PIN", "value": holder.password + "x"}, {"id": "OTP", "value": holder.otp()}]})
    assert_csc_error(wrong, 400, "invalid_request")
    assert wrong.json()["error_reason"] == "AUTHENTICATION_FAILED"
    right = csc_client.post(SIGN_DOC, json={
        "credentialID": holder.credential_id, "documents": [entry],
        "authData": [{"id": "PIN", "value": holder.password}, {"id": "OTP", "value": holder.otp()}]})
    assert_csc_error(right, 400, "invalid_request")
    assert "signAlgo" in right.json()["error_description"]


def test_auth_data_for_a_revoked_credential_says_so_to_the_holder(csc_client, csc_service, holder):
    csc_service.ca.revoke(format(holder.certificate.serial_number, "x"), "superseded", "ra:test")
    answer = csc_client.post(SIGN_DOC, json={
        "credentialID": holder.credential_id, "documents": [document(sample_pdf(1))],
        "authData": [{"id": "PIN", "value": holder.password}, {"id": "OTP", "value": holder.otp()}]})
    assert answer.status_code == 400 and answer.json()["error_reason"] == "CREDENTIAL_UNUSABLE", answer.text


@pytest.mark.parametrize("change", [
    {"stamp": {"page": 9}},  # the document has one page
    {"stamp": {"sealImage": b64(b"not an image")}},
    {"signAlgo": "1.2.840.10045.4.3.3"},  # ECDSA with SHA-384: signDoc signs with SHA-256
    {"signAlgo": "1.2.840.113549.1.1.10"},  # RSASSA-PSS
])
def test_a_malformed_sign_doc_with_auth_data_costs_no_otp_and_counts_nothing(csc_client, csc_service, holder,
                                                                              change):
    """What needs no credential is still checked before the factors."""
    pdf, code = sample_pdf(1), holder.otp()
    factors = [{"id": "PIN", "value": holder.password}, {"id": "OTP", "value": code}]
    refused = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "authData": factors,
                                              "documents": [document(pdf) | change]})
    assert_csc_error(refused, 400, "invalid_request")
    assert csc_service.accounts.lock_state(holder.username).failed_attempts == 0
    signed = csc_client.post(SIGN_DOC, json={"credentialID": holder.credential_id, "authData": factors,
                                             "documents": [document(pdf)]})
    assert signed.status_code == 200, signed.text  # the same OTP: it was not spent
