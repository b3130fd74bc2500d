"""A certificate request whose key cryptography cannot load (an unknown algorithm or curve, a point
off its curve) is the caller's fault: refused as an invalid ``csr`` before anything is issued."""

from __future__ import annotations

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from signserver.ca.builder import load_csr
from signserver.errors import InvalidArgument
from signserver.v1 import certificate_pb2
from tests.ca.conftest import certificates_of
from tests.ca.test_certificate_service import create, ra, served  # noqa: F401 (fixtures)

ID_EC_PUBLIC_KEY = bytes.fromhex("06072a8648ce3d0201")  # OID 1.2.840.10045.2.1
UNKNOWN_KEY_TYPE = bytes.fromhex("06072a8648ce3d0209")  # 1.2.840.10045.2.9: no algorithm
PRIME256V1 = bytes.fromhex("06082a8648ce3d030107")
UNKNOWN_CURVE = bytes.fromhex("06082a8648ce3d030109")
HOLDER = "Lei Ka Io"  # tests.ca.test_certificate_service.create's holder


def csr_der(name: str = HOLDER) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).sign(key, hashes.SHA256()))
    return request.public_bytes(serialization.Encoding.DER)


def unknown_key_type(der: bytes) -> bytes:
    assert der.count(ID_EC_PUBLIC_KEY) == 1
    return der.replace(ID_EC_PUBLIC_KEY, UNKNOWN_KEY_TYPE)


def unknown_curve(der: bytes) -> bytes:
    assert der.count(PRIME256V1) == 1
    return der.replace(PRIME256V1, UNKNOWN_CURVE)


def point_off_the_curve(der: bytes) -> bytes:
    point = der.index(bytes.fromhex("03420004")) + 4  # the BIT STRING of an uncompressed P-256 point
    altered = bytearray(der)
    altered[point + 5] ^= 0xFF
    return bytes(altered)


@pytest.mark.parametrize("alter, words", [(unknown_key_type, "key algorithm is not accepted"),
                                          (unknown_curve, "key algorithm is not accepted"),
                                          (point_off_the_curve, "public key is not valid")])
def test_a_key_cryptography_cannot_load_is_an_invalid_csr(alter, words):
    with pytest.raises(InvalidArgument) as refused:
        load_csr(alter(csr_der()))
    assert words in str(refused.value)
    assert refused.value.field == "csr"


def refusal_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, list[str]]:
    fields = []
    for detail in rpc_status.from_call(error).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return error.code(), error.details(), fields


def test_issue_refuses_a_csr_of_an_unknown_key_algorithm_and_issues_nothing(ra, ca_service):  # noqa: F811
    create(ra, "csr-holder-1")
    with pytest.raises(grpc.RpcError) as refused:
        ra.IssueCertificate(certificate_pb2.IssueCertificateRequest(
            account="csr-holder-1", profile="standard-government", csr=unknown_key_type(csr_der())), timeout=60)
    code, message, fields = refusal_of(refused.value)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "key algorithm is not accepted" in message
    assert fields == ["csr"]
    assert certificates_of(ca_service, "csr-holder-1") == []


def test_renew_refuses_a_csr_of_an_unknown_key_algorithm_and_changes_nothing(ra, ca_service):  # noqa: F811
    create(ra, "csr-holder-2")
    issued = ra.IssueCertificate(certificate_pb2.IssueCertificateRequest(
        account="csr-holder-2", profile="standard-government", csr=csr_der()), timeout=60)
    with pytest.raises(grpc.RpcError) as refused:
        ra.RenewCertificate(certificate_pb2.RenewCertificateRequest(
            serial=issued.serial, csr=unknown_key_type(csr_der())), timeout=60)
    code, message, fields = refusal_of(refused.value)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "key algorithm is not accepted" in message
    assert fields == ["csr"]
    assert [(c.serial, c.status) for c in certificates_of(ca_service, "csr-holder-2")] == [(issued.serial, "valid")]
