"""CertificateService over mutual TLS set up the way `serve` sets it up: RA certificates only."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from signserver.config import ServerConfig, TlsConfig
from signserver.grpc_api.server import bootstrap
from signserver.grpc_api.server import served_config as make_served_config
from signserver.store.schema import audit_log
from signserver.v1 import account_pb2, account_pb2_grpc, certificate_pb2, certificate_pb2_grpc
from tests.ca.conftest import StampedStub
from tests.grpc_api.conftest import ServerThread

PEM = serialization.Encoding.PEM


@pytest.fixture(scope="module")
def served(ca_service, config, tmp_path_factory):
    state = tmp_path_factory.mktemp("served")
    tls = TlsConfig(cert_file=state / "tls" / "server.pem", key_file=state / "tls" / "server-key.pem",
                    client_ca_file=None, explicit=False, mutual=True)
    raw = replace(config, state_dir=state, tls=tls, server=ServerConfig("127.0.0.1:0", False))
    bootstrap(raw, ca_service)
    served_config = make_served_config(raw)
    assert served_config.tls.client_ca_file is not None
    with ServerThread(served_config, ca_service) as server:
        yield server


def client_pair(service, profile: str, name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    issued = service.ca.issue_service_certificate(profile, name, key.public_key(), "operator:test")
    key_pem = key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return issued, issued.certificate.public_bytes(PEM), key_pem


def channel_for(server, certificate: bytes, key: bytes) -> grpc.Channel:
    root = server.config.tls.cert_file.read_bytes() + server.config.tls.client_ca_file.read_bytes()
    credentials = grpc.ssl_channel_credentials(root, private_key=key, certificate_chain=certificate)
    return grpc.secure_channel(f"localhost:{server.port}", credentials)


@pytest.fixture(scope="module")
def ra(served, ca_service, ca_clock):
    _, certificate, key = client_pair(ca_service, "client-ra", "ra-operator-1")
    with channel_for(served, certificate, key) as channel:
        yield StampedStub(certificate_pb2_grpc.CertificateServiceStub(channel), ca_clock)


def create(ra, name: str):
    return ra.CreateAccount(certificate_pb2.CreateAccountRequest(
        account=name, holder_name="Lei Ka Io", emails=[f"{name}@example.mo"], kind="government",
        organisation="DSAJ", department="Legal", title="Técnico", password="Ra-created-1",
        revocation_phrase="Phrase2026ok"), timeout=60)


def test_ra_lifecycle(ra, ca_service):
    created = create(ra, "ra-holder-1")
    assert created.recovery_code and created.otp_uri.startswith("otpauth://")
    issued = ra.IssueCertificate(certificate_pb2.IssueCertificateRequest(
        account="ra-holder-1", profile="cloud-signature-government"), timeout=60)
    assert issued.status == "valid" and issued.credential_id == created.credential_id
    assert ra.GetCertificate(certificate_pb2.GetCertificateRequest(serial=issued.serial), timeout=30).serial == \
        issued.serial
    renewed = ra.RenewCertificate(certificate_pb2.RenewCertificateRequest(serial=issued.serial), timeout=60)
    assert renewed.predecessor_serial == issued.serial

    ca_service.accounts.update_holder("ra-holder-1", "test", title="Chefe")
    with pytest.raises(grpc.RpcError) as refused:
        ra.RenewCertificate(certificate_pb2.RenewCertificateRequest(serial=renewed.serial), timeout=60)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.details().startswith("AC-AB-0015")
    assert ("help-code", "AC-AB-0015") in tuple(refused.value.trailing_metadata())

    with pytest.raises(grpc.RpcError) as wrong:
        ra.RevokeCertificate(certificate_pb2.RevokeCertificateRequest(
            serial=renewed.serial, account="ra-holder-1", revocation_phrase="NotThePhrase1"), timeout=30)
    assert wrong.value.code() is grpc.StatusCode.PERMISSION_DENIED
    revoked = ra.RevokeCertificate(certificate_pb2.RevokeCertificateRequest(
        serial=renewed.serial, reason="affiliationChanged"), timeout=30)
    assert revoked.status == "revoked" and revoked.revocation_reason == "affiliationChanged"
    listed = ra.ListCertificates(certificate_pb2.ListCertificatesRequest(account="ra-holder-1"), timeout=30)
    assert {c.serial: c.status for c in listed.certificates} == {issued.serial: "valid", renewed.serial: "revoked"}

    with ca_service.database.read() as conn:
        actors = {r.actor for r in conn.execute(select(audit_log.c.actor).where(audit_log.c.subject == "ra-holder-1"))}
    assert "ra:ra-operator-1" in actors


def test_unlock_account(ra, ca_service):
    from signserver.errors import AuthenticationFailed
    from signserver.secret import Secret

    created = create(ra, "ra-holder-2")
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            ca_service.accounts._authenticator.authenticate("ra-holder-2", Secret("Wrong-pass-1"), None, False, "t")
    unlocked = ra.UnlockAccount(certificate_pb2.UnlockAccountRequest(
        account="ra-holder-2", recovery_code=created.recovery_code, new_password="After-unlock-1"), timeout=60)
    assert unlocked.recovery_code != created.recovery_code
    assert ca_service.accounts.get("ra-holder-2").status.value == "active"


def test_an_application_certificate_is_refused(served, ca_service):
    issued, certificate, key = client_pair(ca_service, "client-asp", "portal-1")
    ca_service.applications.set_client_certificate(
        "portal-1", hashlib.sha256(issued.certificate.public_bytes(serialization.Encoding.DER)).hexdigest())
    with channel_for(served, certificate, key) as channel:
        stub = certificate_pb2_grpc.CertificateServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListCertificates(certificate_pb2.ListCertificatesRequest(), timeout=30)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        # ... while the same certificate is what the application signs with
        accounts = account_pb2_grpc.AccountServiceStub(channel)
        assert accounts.GetAccountStatus(account_pb2.GetAccountStatusRequest(account="ra-holder-1"), timeout=30)


def test_a_revoked_ra_certificate_is_refused(served, ca_service):
    issued, certificate, key = client_pair(ca_service, "client-ra", "ra-operator-2")
    ca_service.ca.revoke(issued.serial, "privilegeWithdrawn", "operator:test")
    with channel_for(served, certificate, key) as channel:
        stub = certificate_pb2_grpc.CertificateServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListCertificates(certificate_pb2.ListCertificatesRequest(), timeout=30)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED and "revoked" in refused.value.details()


def test_a_client_without_a_certificate_cannot_connect(served):
    root = served.config.tls.cert_file.read_bytes() + served.config.tls.client_ca_file.read_bytes()
    with grpc.secure_channel(f"localhost:{served.port}", grpc.ssl_channel_credentials(root)) as channel:
        stub = certificate_pb2_grpc.CertificateServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListCertificates(certificate_pb2.ListCertificatesRequest(), timeout=10)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_server_certificate_is_issued_by_the_ca(served, ca_service):
    from cryptography import x509

    leaf = x509.load_pem_x509_certificate(served.config.tls.cert_file.read_bytes())
    leaf.verify_directly_issued_by(ca_service.ca.chain()[0])



def test_create_account_without_a_recovery_code(ra, ca_service):
    from signserver.errors import AuthenticationFailed
    from signserver.secret import Secret

    created = ra.CreateAccount(certificate_pb2.CreateAccountRequest(
        account="ra-holder-no-code", holder_name="Lei Ka Io", emails=["ra-holder-no-code@example.mo"],
        kind="government", organisation="DSAJ", password="Ra-created-2", no_recovery_code=True), timeout=60)
    assert created.recovery_code == "" and created.otp_uri.startswith("otpauth://")
    with pytest.raises(AuthenticationFailed):
        ca_service.accounts.unlock_with_recovery_code("ra-holder-no-code", Secret("AAAAA-BBBBB-CCCCC-DDDDD-EEEEE"),
                                                      Secret("After-unlock-2"), "operator:test")
    with pytest.raises(grpc.RpcError) as refused:
        ra.UnlockAccount(certificate_pb2.UnlockAccountRequest(
            account="ra-holder-no-code", recovery_code="AAAAA-BBBBB-CCCCC-DDDDD-EEEEE",
            new_password="After-unlock-2"), timeout=60)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    # Without the field, a code as before.
    assert create(ra, "ra-holder-with-code").recovery_code


def test_ra_certificates_stay_ra_certificates_when_the_policy_arc_changes(ca_service, config, ca_clock):
    """An RA is known by the profile its certificate was issued with, so an administrator moving
    ca.policy_oid_arc (from the default to the deployment's own arc, say) locks no RA out; and an
    application's certificate never passes for an RA's, whatever OIDs it names."""
    from signserver.errors import PermissionDenied
    from tests.conftest import service_with

    _, ra_certificate, _ = client_pair(ca_service, "client-ra", "ra-before-the-move")
    _, asp_certificate, _ = client_pair(ca_service, "client-asp", "asp-before-the-move")
    moved = service_with(config, ca_service.database.url, ca_clock, ca=replace(config.ca, policy_oid_arc="1.3.6.1.4.1.64000.9"))
    assert moved.ca.profile("client-ra").policy != ca_service.ca.profile("client-ra").policy
    assert moved.ca.identify_ra(ra_certificate) == "ra-before-the-move"
    with pytest.raises(PermissionDenied):
        moved.ca.identify_ra(asp_certificate)
