"""A signature field's seed value that asks for a time-stamp: the document never chooses the
time-stamping authority, and a TSA's refusal is the TSA's, never the server's own failure."""

from __future__ import annotations

import dataclasses
import io

import grpc
import pytest
from asn1crypto import tsp

from signserver.errors import InvalidArgument, UpstreamUnavailable
from signserver.pades.document import PadesLevel
from signserver.pades.sample import sample_pdf
from signserver.pades.stamp import StampOptions
from signserver.pades.tsa import parse_request
from signserver.v1 import document_pb2
from tests.conftest import PASSWORD
from tests.pades.field_documents import asking_for_time_stamp, listener
from tests.pades.test_document_api import api, collect  # noqa: F401 (the fixture)
from tests.pades.test_signing import sign

IN_THE_FIELD = StampOptions(field_name="Sig1")


def test_a_field_requiring_a_time_stamp_is_refused_at_b_b_without_calling_its_address(pades_world):
    with listener() as (url, posted):
        with pytest.raises(InvalidArgument, match="requires a time-stamp; sign at B-T or above"):
            sign(pades_world, asking_for_time_stamp(url), PadesLevel.B_B, IN_THE_FIELD)
    assert posted == []


def test_a_field_suggesting_a_time_stamp_is_signed_at_b_b_without_one_nor_a_call(pades_world):
    with listener() as (url, posted):
        signed = sign(pades_world, asking_for_time_stamp(url, required=False), PadesLevel.B_B, IN_THE_FIELD)
    assert posted == []
    [report] = pades_world[0].pades.verify_pdf(io.BytesIO(signed)).signatures
    assert report.valid and report.timestamp is None


def test_a_field_requiring_a_time_stamp_gets_the_services_own_at_b_t(pades_world):
    with listener() as (url, posted):
        signed = sign(pades_world, asking_for_time_stamp(url), PadesLevel.B_T, IN_THE_FIELD)
    assert posted == []
    [report] = pades_world[0].pades.verify_pdf(io.BytesIO(signed)).signatures
    assert report.valid and report.timestamp and report.timestamp_valid


def _refusal(service) -> bytes:
    """A TSA's answer that grants nothing: the built-in TSA's to bytes that are no request."""
    return parse_request(b"no request").dump()


def _token_for_another_request(service) -> bytes:
    """A time-stamp granted to another request (its nonce is not the one asked)."""
    request = tsp.TimeStampReq({"version": "v1", "nonce": 1, "cert_req": True, "message_imprint": {
        "hash_algorithm": {"algorithm": "sha256"}, "hashed_message": bytes(32)}})
    return service.pades.tsa.respond(request.dump())


@pytest.mark.parametrize("answer", [_refusal, _token_for_another_request], ids=["refusal", "another-nonce"])
def test_a_configured_tsa_that_grants_no_time_stamp_is_upstream_unavailable(pades_world, answer):
    service = pades_world[0]
    original = service.pades.config
    try:
        with listener(200, answer(service)) as (url, posted):
            service.pades.config = dataclasses.replace(original, tsa_url=url)
            with pytest.raises(UpstreamUnavailable, match="granted no time-stamp|did not grant a time-stamp"):
                sign(pades_world, sample_pdf(1), PadesLevel.B_T)
        assert posted  # the configured authority was asked
    finally:
        service.pades.config = original


def _header(created, level: str, **factors) -> document_pb2.SignPdfHeader:
    return document_pb2.SignPdfHeader(credential_id=created.credential.id, level=level,
                                      stamp=document_pb2.Stamp(field_name="Sig1"), **factors)


def test_sign_pdf_never_calls_the_address_a_field_names(api):  # noqa: F811
    stub, metadata, created = api
    with listener() as (url, posted):
        def requests():
            yield document_pb2.SignPdfRequest(header=_header(created, "B-B", account=created.account.username,
                                                             password=PASSWORD))
            yield document_pb2.SignPdfRequest(chunk=asking_for_time_stamp(url))
        with pytest.raises(grpc.RpcError) as refused:
            collect(stub.SignPdf(requests(), metadata=metadata, timeout=120))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert "requires a time-stamp" in refused.value.details()
    assert posted == []


def test_prepare_signature_never_calls_the_address_a_field_names(api):  # noqa: F811
    """PrepareSignature takes no factor of the holder: only the application's own key."""
    stub, metadata, created = api
    with listener() as (url, posted):
        def requests():
            yield document_pb2.PrepareSignatureRequest(header=_header(created, "B-B"))
            yield document_pb2.PrepareSignatureRequest(chunk=asking_for_time_stamp(url))
        with pytest.raises(grpc.RpcError) as refused:
            stub.PrepareSignature(requests(), metadata=metadata, timeout=120)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert posted == []
