"""Who may call CertificateService: a caller that presents no client certificate at all has not
authenticated (UNAUTHENTICATED, as every other service answers it), while one known by another
certificate may not (PERMISSION_DENIED)."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from signserver.v1 import certificate_pb2, certificate_pb2_grpc


def reason_of(error: grpc.RpcError) -> str:
    [detail] = [d for d in rpc_status.from_call(error).details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    info = error_details_pb2.ErrorInfo()
    detail.Unpack(info)
    return info.reason


@pytest.mark.parametrize("call", [
    lambda stub: stub.ListCertificates(certificate_pb2.ListCertificatesRequest(), timeout=30),
    lambda stub: stub.AuthenticateHolder(certificate_pb2.AuthenticateHolderRequest(
        account="someone", password="Some-pass-123", otp="123456"), timeout=30),
])
def test_a_caller_without_a_certificate_is_unauthenticated(channel, call):
    stub = certificate_pb2_grpc.CertificateServiceStub(channel)
    with pytest.raises(grpc.RpcError) as refused:
        call(stub)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(refused.value) == "APPLICATION_UNAUTHENTICATED"
    assert "signserver ca issue-client --role ra" in refused.value.details()
