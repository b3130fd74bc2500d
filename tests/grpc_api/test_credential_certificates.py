"""GetCredentialInfo gives an application what it needs to build its own CMS: the credential's
certificate and the chain to the root, none before the first certificate."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
from signserver.v1 import signing_pb2
from tests.conftest import enrol, service_with_ca
from tests.grpc_api.conftest import ServerThread
from tests.grpc_api.test_signing_api import Client

SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def world(config, tmp_path_factory):
    service = service_with_ca(config, tmp_path_factory.mktemp("certificates") / "signserver.db", None)
    _, api_key = service.applications.create("cms-app")
    with ServerThread(config, service) as server, server.channel() as channel:
        yield service, Client(channel, api_key)


def credential_info(client, credential_id: str) -> signing_pb2.CredentialInfo:
    return client.call(client.signing, "GetCredentialInfo", credential_id=credential_id)


def test_no_certificates_before_the_first(world):
    service, client = world
    created, _ = enrol(service)
    info = credential_info(client, created.credential.id)
    assert info.public_key and list(info.certificates) == []


def test_the_certificate_comes_first_then_its_chain_to_the_root(world):
    service, client = world
    created, _ = enrol(service, kind=AccountKind.CORPORATE, organisation="Example Lda")
    issued = service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra:test")
    info = credential_info(client, created.credential.id)
    certificates = [x509.load_der_x509_certificate(der) for der in info.certificates]
    assert len(certificates) == 3
    holder, issuing, root = certificates
    assert holder.serial_number == int(issued.serial, 16)
    assert holder.public_key().public_bytes(*SPKI) == info.public_key  # the credential's own key
    for child, parent in ((holder, issuing), (issuing, root), (root, root)):
        assert child.issuer == parent.subject
        child.verify_directly_issued_by(parent)  # raises if the signature does not verify
    assert root == service.ca.chain()[-1]
