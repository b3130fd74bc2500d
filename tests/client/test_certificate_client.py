"""CertificateClient over a real served core with an RA client certificate (mutual TLS)."""

from __future__ import annotations

import datetime
import hashlib
import json

import pytest
from sqlalchemy import select

from signserver.client import (
    AlreadyRenewed,
    AuthenticationRefused,
    CertificateClient,
    CertificateRefused,
    Evidence,
    NewAccount,
    NotFound,
    PermissionRefused,
    RequestReplayed,
)
from signserver.clock import ManualClock
from signserver.store.schema import audit_log
from tests.ca.conftest import ca_clock, ca_service  # noqa: F401 (fixtures)
from tests.ca.test_certificate_service import client_pair, served  # noqa: F401 (a fixture)


def client_for(server, service, name: str, profile: str = "client-ra", clock=None) -> CertificateClient:
    _, certificate, key = client_pair(service, profile, name)
    root = server.config.tls.cert_file.read_bytes() + server.config.tls.client_ca_file.read_bytes()
    return CertificateClient(f"localhost:{server.port}", root_certificates=root, client_certificate=certificate,
                             client_key=key, timeout_seconds=60, clock=clock)


@pytest.fixture(scope="module")
def ra(served, ca_service, ca_clock):  # noqa: F811
    with client_for(served, ca_service, "ra-client-tests", clock=ca_clock) as client:
        yield client


def new_account(name: str) -> NewAccount:
    return NewAccount(account=name, holder_name="Lei Ka Io", emails=(f"{name}@example.mo",), password="Ra-created-1",
                      kind="government", organisation="DSAJ", department="Legal", revocation_phrase="Phrase2026ok")


def test_the_lifecycle_in_typed_values(ra, ca_service):
    created = ra.create_account(new_account("client-holder-1"))
    assert created.account == "client-holder-1" and created.recovery_code
    assert "Ra-created-1" not in repr(new_account("x")) and created.recovery_code not in repr(created)
    issued = ra.issue_certificate("client-holder-1", "cloud-signature-government")
    assert issued.status == "valid" and issued.credential_id == created.credential_id and issued.account == \
        "client-holder-1"
    assert issued.not_after - issued.not_before > datetime.timedelta(days=300) and issued.revoked_at is None
    assert ra.get_certificate(issued.serial) == issued

    evidence = Evidence(registry_match="match", face_score=0.91,
                        email_verifications=(("client-holder-1@example.mo",
                                              datetime.datetime(2026, 11, 30, 9, 15, tzinfo=datetime.timezone.utc)),),
                        application_sha256=hashlib.sha256(b"application").digest(), reference="renewal-17")
    renewed = ra.renew_certificate(issued.serial, evidence=evidence)
    assert renewed.predecessor_serial == issued.serial and renewed.serial != issued.serial

    revoked = ra.revoke_certificate(renewed.serial, "keyCompromise", revocation_phrase="Phrase2026ok",
                                    account="client-holder-1")
    assert revoked.status == "revoked" and revoked.revocation_reason == "keyCompromise" and revoked.revoked_at
    listed = {c.serial: c.status for c in ra.list_certificates("client-holder-1")}
    assert listed == {issued.serial: "valid", renewed.serial: "revoked"}

    # The evidence went with the renewal into the audit log.
    with ca_service.database.read() as conn:
        details = [json.loads(r.detail) for r in conn.execute(
            select(audit_log.c.detail).where(audit_log.c.event == "ra.request", audit_log.c.subject == issued.serial))]
    assert [d["evidence"] for d in details if d["method"] == "RenewCertificate"] == [{
        "registry_match": "match", "face_score": 0.91,
        "email_verifications": [["client-holder-1@example.mo", 1796030100]],
        "application_sha256": hashlib.sha256(b"application").hexdigest(), "reference": "renewal-17"}]


def test_a_help_code_reaches_the_client(ra, ca_service):
    ra.create_account(new_account("client-holder-2"))
    issued = ra.issue_certificate("client-holder-2", "cloud-signature-government")
    ca_service.accounts.update_holder("client-holder-2", "test", title="Chefe")
    with pytest.raises(CertificateRefused) as refused:
        ra.renew_certificate(issued.serial, evidence=Evidence(reference="renewal-18"))
    assert refused.value.help_code == "AC-AB-0015"
    assert refused.value.code == "FAILED_PRECONDITION" and refused.value.reason == "CERTIFICATE_REFUSED"


def test_a_wrong_revocation_phrase_and_an_unknown_serial(ra):
    ra.create_account(new_account("client-holder-3"))
    issued = ra.issue_certificate("client-holder-3", "cloud-signature-government")
    with pytest.raises(PermissionRefused):
        ra.revoke_certificate(issued.serial, "unspecified", revocation_phrase="NotThePhrase1",
                              account="client-holder-3")
    with pytest.raises(NotFound):
        ra.get_certificate("7f" * 8)


def test_an_application_certificate_is_refused(served, ca_service):  # noqa: F811
    with client_for(served, ca_service, "client-tests-asp", profile="client-asp") as client:
        with pytest.raises(PermissionRefused):
            client.list_certificates()


def test_a_request_from_a_clock_far_off_is_refused(served, ca_service, ca_clock):  # noqa: F811
    late = ManualClock(ca_clock.now() - datetime.timedelta(minutes=6))
    with client_for(served, ca_service, "ra-late-clock", clock=late) as client:
        with pytest.raises(RequestReplayed) as refused:
            client.create_account(new_account("client-holder-late"))
        assert refused.value.reason == "RA_REQUEST_OUT_OF_WINDOW"
        late.advance(minutes=2)  # now 4 minutes behind: inside the window
        assert client.create_account(new_account("client-holder-late")).account == "client-holder-late"


def test_a_wrong_holder_password_is_refused_as_authorize_refuses(ra, ca_service):
    ra.create_account(new_account("client-holder-4"))
    issued = ra.issue_certificate("client-holder-4", "cloud-signature-government")
    with pytest.raises(AuthenticationRefused) as refused:
        ra.renew_certificate(issued.serial, evidence=Evidence(), holder_password="Not-the-1",
                             revocation_phrase="NewPhrase2027")
    assert refused.value.reason == "AUTHENTICATION_FAILED"
    assert ca_service.accounts.lock_state("client-holder-4").failed_attempts == 1


def test_a_second_renewal_of_one_certificate_is_refused_with_its_reason(ra):
    ra.create_account(new_account("client-holder-5"))
    issued = ra.issue_certificate("client-holder-5", "cloud-signature-government")
    renewed = ra.renew_certificate(issued.serial, evidence=Evidence(reference="renewal-19"))
    with pytest.raises(AlreadyRenewed) as refused:
        ra.renew_certificate(issued.serial, evidence=Evidence(reference="renewal-19"))
    assert refused.value.code == "FAILED_PRECONDITION" and refused.value.reason == "ALREADY_RENEWED"
    assert isinstance(refused.value, CertificateRefused) and renewed.serial in refused.value.message
