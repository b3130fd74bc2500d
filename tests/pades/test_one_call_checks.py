"""gRPC's one-call SignPdf refuses a document or stamp it could not sign before it checks the
holder's factors: a bad request costs the holder no OTP (each code is accepted once), and the
same code then signs a good one. The stamp's text, which holds the holder's name, is checked
after the factors: before them it would tell whether the account exists."""

from __future__ import annotations

import grpc
import pytest

from signserver.accounts import otp
from signserver.pades.sample import sample_pdf
from signserver.v1 import document_pb2
from tests.conftest import PASSWORD
from tests.pades.test_field_names import with_field
from tests.pades.test_document_api import collect
from tests.pades.test_seal_images import documents, field_violations, holder  # noqa: F401 (fixtures)


def sign_pdf(stub, metadata, holder, code: str, pdf: bytes, **stamp) -> bytes:  # noqa: F811
    created, _ = holder
    header = document_pb2.SignPdfHeader(account=created.account.username, password=PASSWORD, otp=code,
                                        credential_id=created.credential.id, level="B-B",
                                        stamp=document_pb2.Stamp(**stamp))
    requests = [document_pb2.SignPdfRequest(header=header), document_pb2.SignPdfRequest(chunk=pdf)]
    return collect(stub.SignPdf(iter(requests), metadata=metadata, timeout=60))[1]


REFUSED = {
    "a document that is no PDF": (lambda: b"%PDF-1.7\nnot a document at all\n%%EOF\n", {}, "PDF"),
    "an unknown time zone": (lambda: sample_pdf(1), {"time_zone": "Mars/Olympus_Mons"}, "time zone"),
    "a page the document does not have": (lambda: sample_pdf(1), {"page": 7}, "page 7 is out of range"),
    "a page before the first": (lambda: sample_pdf(1), {"page": -3}, "page -3 is out of range"),
    "a rectangle off the page": (lambda: sample_pdf(1), {"x1": 5000, "y1": 5000, "x2": 5200, "y2": 5080}, "page"),
    "a rectangle upside down": (lambda: sample_pdf(1), {"x1": 200, "y1": 200, "x2": 100, "y2": 100}, "x1 < x2"),
    "a field name a text field has": (lambda: with_field("Name", "/Tx"), {"field_name": "Name"},
                                      "'Name' is a text field"),
    # 2,000 characters, as gRPC takes, but 6,000 bytes: more than a QR code holds.
    "a verification address no QR code holds": (lambda: sample_pdf(1),
                                                {"verification_url": "https://sign.example.mo/" + "驗" * 1900},
                                                "too long for a QR code"),
}


FIELDS = {"an unknown time zone": "time_zone", "a page the document does not have": "page",
          "a page before the first": "page", "a rectangle off the page": "x1", "a rectangle upside down": "x1",
          "a field name a text field has": "field_name", "a verification address no QR code holds": "verification_url"}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_request_it_cannot_sign_is_refused_before_the_otp_is_spent(documents, holder, pades_world,  # noqa: F811
                                                                      case):
    stub, metadata = documents
    pdf, stamp, said = REFUSED[case]
    code = otp.code_at(holder[1], pades_world[0].clock.now())
    with pytest.raises(grpc.RpcError) as refused:
        sign_pdf(stub, metadata, holder, code, pdf(), **stamp)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT and said in refused.value.details(), \
        refused.value.details()
    if case in FIELDS:  # the stamp's option at fault, in the BadRequest detail
        assert [field for field, _ in field_violations(refused.value)] == [FIELDS[case]]
    assert sign_pdf(stub, metadata, holder, code, sample_pdf(1)).startswith(b"%PDF")  # the same code signs
