"""A document stream a client gets wrong (no header first, a message that carries nothing, a
second header, nothing sent, too much sent, an unknown level) is refused as INVALID_ARGUMENT with
a message that says what was wrong and a BadRequest naming the field at fault."""

from __future__ import annotations

from dataclasses import replace

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from signserver.config import PadesConfig
from signserver.pades.sample import sample_pdf
from signserver.v1 import document_pb2, document_pb2_grpc
from tests.client.conftest import world  # noqa: F401  (one server, a holder with a certificate, an application)


def violations(error: grpc.RpcError) -> list[str]:
    found = []
    for detail in rpc_status.from_call(error).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found += [v.field for v in bad.field_violations]
    return found


def header(world, **fields) -> document_pb2.PrepareSignatureRequest:
    return document_pb2.PrepareSignatureRequest(header=document_pb2.SignPdfHeader(
        credential_id=world.holder.credential.id, **fields))


def chunk(data: bytes) -> document_pb2.PrepareSignatureRequest:
    return document_pb2.PrepareSignatureRequest(chunk=data)


NOTHING = document_pb2.PrepareSignatureRequest()  # neither a header nor a chunk


@pytest.mark.parametrize("messages, field, words", [
    (lambda w: [chunk(sample_pdf())], "header", "the first message must carry the header"),
    (lambda w: [NOTHING, chunk(sample_pdf())], "header", "the first message must carry the header"),
    (lambda w: [header(w), chunk(sample_pdf()), header(w)], "header", "only the first message carries a header"),
    (lambda w: [header(w), chunk(sample_pdf()), NOTHING], "chunk", "carries no chunk"),
    (lambda w: [header(w)], "chunk", "no document was sent"),
    (lambda w: [header(w, level="B-X"), chunk(sample_pdf())], "level", "unknown PAdES level"),
], ids=["chunk-first", "nothing-first", "second-header", "nothing-after", "no-document", "unknown-level"])
def test_a_malformed_stream_is_refused_naming_the_field(world, messages, field, words):  # noqa: F811
    stub = document_pb2_grpc.DocumentServiceStub(world.server.channel())
    with pytest.raises(grpc.RpcError) as refused:
        stub.PrepareSignature(iter(messages(world)), metadata=(("x-api-key", world.api_key),), timeout=60)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert words in refused.value.details()
    assert violations(refused.value) == [field]


def test_a_document_over_the_limit_is_refused_naming_the_chunks(world):  # noqa: F811
    stub = document_pb2_grpc.DocumentServiceStub(world.server.channel())
    megabyte = bytes(1 << 20)
    limit = world.service.config.pades.max_document_mb
    messages = [header(world), *(chunk(megabyte) for _ in range(limit + 1))]
    with pytest.raises(grpc.RpcError) as refused:
        stub.PrepareSignature(iter(messages), metadata=(("x-api-key", world.api_key),), timeout=120)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"the limit is {limit} MB" in refused.value.details()
    assert violations(refused.value) == ["chunk"]
