"""The RA's requests to the core: each admitted once (nonce, time), its evidence in the audit log,
and the holder's part of a renewal (password, new password, revocation phrase)."""

from __future__ import annotations

import datetime
import hashlib
import json

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import select

from signserver.ca.ra_requests import RaEvidence, RaRequest
from signserver.errors import AuthenticationFailed, InvalidArgument, RequestOutOfWindow, RequestReplayed
from signserver.hsm.algorithms import HashAlgorithm, SignatureAlgorithm
from signserver.secret import Secret
from signserver.store.schema import audit_log, ra_request_nonces
from signserver.v1 import certificate_pb2, certificate_pb2_grpc
from tests.ca.conftest import StampedStub, certificates_of, stamp
from tests.ca.test_certificate_service import channel_for, client_pair, create, served  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def raw(served, ca_service):  # noqa: F811
    """An RA's stub that sends requests as they are given."""
    _, certificate, key = client_pair(ca_service, "client-ra", "ra-operator-nonces")
    with channel_for(served, certificate, key) as channel:
        yield certificate_pb2_grpc.CertificateServiceStub(channel)


@pytest.fixture(scope="module")
def ra(raw, ca_clock):
    return StampedStub(raw, ca_clock)


def reason_of(error: grpc.RpcError) -> tuple[str, list[str]]:
    """The ErrorInfo reason and the BadRequest fields of a refusal."""
    reason, fields = "", []
    for detail in rpc_status.from_call(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return reason, fields


def test_the_same_nonce_twice_is_refused_and_changes_nothing(raw, ra, ca_service, ca_clock):
    create(ra, "nonce-holder-1")
    request = stamp(certificate_pb2.IssueCertificateRequest(account="nonce-holder-1",
                                                            profile="cloud-signature-government"), ca_clock)
    raw.IssueCertificate(request, timeout=60)
    with pytest.raises(grpc.RpcError) as refused:
        raw.IssueCertificate(request, timeout=60)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(refused.value)[0] == "RA_REQUEST_REPLAYED"
    assert len(certificates_of(ca_service, "nonce-holder-1")) == 1
    # The nonce is the request's, not the call's: another call with it is a replay too.
    with pytest.raises(grpc.RpcError) as other:
        raw.UnlockAccount(certificate_pb2.UnlockAccountRequest(
            account="nonce-holder-1", recovery_code="AAAAA-BBBBB-CCCCC-DDDDD-EEEEE", new_password="Unlocked-2026",
            nonce=request.nonce, requested_at=request.requested_at), timeout=60)
    assert reason_of(other.value)[0] == "RA_REQUEST_REPLAYED"


def test_an_old_request_is_refused(raw, ra, ca_service, ca_clock):
    create(ra, "nonce-holder-2")
    request = certificate_pb2.IssueCertificateRequest(account="nonce-holder-2", profile="cloud-signature-government",
                                                      nonce="an-old-request-nonce-0001")
    request.requested_at.FromDatetime((ca_clock.now() - datetime.timedelta(minutes=5, seconds=1)).replace(tzinfo=None))
    with pytest.raises(grpc.RpcError) as refused:
        raw.IssueCertificate(request, timeout=60)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(refused.value)[0] == "RA_REQUEST_OUT_OF_WINDOW"
    assert certificates_of(ca_service, "nonce-holder-2") == []


@pytest.mark.parametrize("missing", ["nonce", "requested_at"])
def test_a_request_without_its_nonce_or_time_is_refused(raw, ca_clock, missing):
    request = stamp(certificate_pb2.RevokeCertificateRequest(serial="7f01", reason="unspecified"), ca_clock)
    request.ClearField(missing)
    with pytest.raises(grpc.RpcError) as refused:
        raw.RevokeCertificate(request, timeout=30)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(refused.value) == ("INVALID_ARGUMENT", [missing])


@pytest.mark.parametrize("seconds, nanos", [(2**62, 0), (-2**62, 0), (0, -5), (253402300799, 0)])
def test_a_time_out_of_any_range_is_refused_as_the_callers_fault(raw, ca_clock, seconds, nanos):
    request = stamp(certificate_pb2.RevokeCertificateRequest(serial="7f01", reason="unspecified"), ca_clock)
    request.requested_at.seconds, request.requested_at.nanos = seconds, nanos
    with pytest.raises(grpc.RpcError) as refused:
        raw.RevokeCertificate(request, timeout=30)
    assert refused.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
    # The same time as an e-mail verification's: refused, or (the last second of 9999) recorded;
    # the serial is nobody's, so a request admitted ends NOT_FOUND.
    request = stamp(certificate_pb2.RevokeCertificateRequest(serial="7f01", reason="unspecified"), ca_clock)
    verification = request.evidence.email_verifications.add(address="someone@example.mo")
    verification.verified_at.seconds, verification.verified_at.nanos = seconds, nanos
    with pytest.raises(grpc.RpcError) as evidence:
        raw.RevokeCertificate(request, timeout=30)
    assert evidence.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)


def test_evidence_beyond_its_bounds_is_refused(raw, ca_clock):
    request = stamp(certificate_pb2.RevokeCertificateRequest(serial="7f01", reason="unspecified"), ca_clock)
    request.evidence.face_score = 1.5
    with pytest.raises(grpc.RpcError) as refused:
        raw.RevokeCertificate(request, timeout=30)
    assert reason_of(refused.value) == ("INVALID_ARGUMENT", ["evidence.face_score"])


def test_the_evidence_is_in_the_audit_record_before_the_change(raw, ra, ca_service, ca_clock):
    create(ra, "nonce-holder-3")
    request = stamp(certificate_pb2.IssueCertificateRequest(account="nonce-holder-3",
                                                            profile="cloud-signature-government"), ca_clock)
    request.evidence.registry_match = "match"
    request.evidence.face_score = 0.875
    request.evidence.reference = "request-42"
    verification = request.evidence.email_verifications.add(address="nonce-holder-3@example.mo")
    verification.verified_at.FromDatetime(datetime.datetime(2026, 11, 30, 8, 0))
    issued = raw.IssueCertificate(request, timeout=60)
    with ca_service.database.read() as conn:
        records = conn.execute(select(audit_log).where(audit_log.c.subject == "nonce-holder-3",
                                                       audit_log.c.seq > 0).order_by(audit_log.c.seq)).all()
    admitted = [r for r in records if r.event == "ra.request" and json.loads(r.detail)["nonce"] == request.nonce]
    assert len(admitted) == 1 and admitted[0].actor == "ra:ra-operator-nonces"
    detail = json.loads(admitted[0].detail)
    assert detail["method"] == "IssueCertificate"
    assert detail["requested_at"] == request.requested_at.seconds
    assert detail["evidence"] == {"registry_match": "match", "face_score": 0.875, "reference": "request-42",
                                  "email_verifications": [["nonce-holder-3@example.mo", 1796025600]],
                                  "application_sha256": None}
    issued_record = next(r for r in records if r.event == "certificate.issued"
                         and json.loads(r.detail)["serial"] == issued.serial)
    assert admitted[0].seq < issued_record.seq


def test_nonces_are_kept_for_twice_the_window_then_pruned(ca_service, ca_clock):
    requests = ca_service.ca.ra_requests

    def admit(nonce: str) -> None:
        requests.admit(RaRequest("ra:test", "IssueCertificate", "somebody", nonce, ca_clock.now(), RaEvidence()))

    admit("prune-me-nonce-00001")
    with pytest.raises(RequestReplayed):
        admit("prune-me-nonce-00001")
    with pytest.raises(InvalidArgument):
        admit("short")
    with pytest.raises(RequestOutOfWindow):
        requests.admit(RaRequest("ra:test", "IssueCertificate", "somebody", "a-nonce-from-the-future-1",
                                 ca_clock.now() + datetime.timedelta(minutes=6), RaEvidence()))
    ca_clock.advance(minutes=10, seconds=1)
    try:
        admit("prune-trigger-00001")
        with ca_service.database.read() as conn:
            kept = set(conn.execute(select(ra_request_nonces.c.nonce)).scalars())
        assert "prune-me-nonce-00001" not in kept and "prune-trigger-00001" in kept
    finally:
        ca_clock.advance(minutes=-10, seconds=-1)


# The holder's part of a renewal

def holder_with_certificate(ra, name: str):
    create(ra, name)
    return ra.IssueCertificate(certificate_pb2.IssueCertificateRequest(
        account=name, profile="cloud-signature-government"), timeout=60)


def renew(ra, serial: str, **fields):
    return ra.RenewCertificate(certificate_pb2.RenewCertificateRequest(serial=serial, **fields), timeout=60)


def test_activation_with_the_current_password_sets_the_phrase(ra, ca_service):
    issued = holder_with_certificate(ra, "activation-holder-1")
    renewed = renew(ra, issued.serial, holder_password="Ra-created-1", revocation_phrase="NewPhrase2027")
    assert renewed.predecessor_serial == issued.serial
    assert ca_service.accounts.check_revocation_phrase("activation-holder-1", Secret("NewPhrase2027"))
    assert not ca_service.accounts.check_revocation_phrase("activation-holder-1", Secret("Phrase2026ok"))


def test_activation_needs_the_password_while_a_cloud_certificate_is_valid(ra, ca_service):
    issued = holder_with_certificate(ra, "activation-holder-2")
    with pytest.raises(grpc.RpcError) as missing:
        renew(ra, issued.serial, revocation_phrase="NewPhrase2027")
    assert missing.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(missing.value)[1] == ["holder_password"]
    with pytest.raises(grpc.RpcError) as new_one:
        renew(ra, issued.serial, new_password="Another-2027", revocation_phrase="NewPhrase2027")
    assert new_one.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert len(certificates_of(ca_service, "activation-holder-2")) == 1


def test_a_wrong_holder_password_counts_toward_the_lockout_and_says_nothing_more(ra, ca_service):
    issued = holder_with_certificate(ra, "activation-holder-3")
    for attempt in range(1, 6):
        with pytest.raises(grpc.RpcError) as wrong:
            renew(ra, issued.serial, holder_password="Not-the-pass-1", revocation_phrase="NewPhrase2027")
        if attempt < 5:
            assert wrong.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert wrong.value.details() == AuthenticationFailed.GENERIC
            assert ca_service.accounts.lock_state("activation-holder-3").failed_attempts == attempt
    assert ca_service.accounts.lock_state("activation-holder-3").locked_until is not None
    # Locked: even the right password is refused now, and nothing was issued.
    with pytest.raises(grpc.RpcError) as locked:
        renew(ra, issued.serial, holder_password="Ra-created-1", revocation_phrase="NewPhrase2027")
    assert reason_of(locked.value)[0] == "ACCOUNT_LOCKED"
    assert len(certificates_of(ca_service, "activation-holder-3")) == 1


def test_a_new_password_when_no_certificate_is_valid(ra, ca_service):
    issued = holder_with_certificate(ra, "activation-holder-4")
    ra.RevokeCertificate(certificate_pb2.RevokeCertificateRequest(serial=issued.serial, reason="superseded"),
                         timeout=30)
    with pytest.raises(grpc.RpcError) as rules:
        renew(ra, issued.serial, new_password="short", revocation_phrase="NewPhrase2027")
    assert rules.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    renewed = renew(ra, issued.serial, new_password="Renewed-2027", revocation_phrase="NewPhrase2027")
    assert renewed.status == "valid" and renewed.credential_id != issued.credential_id
    ca_service.accounts.check_password("activation-holder-4", Secret("Renewed-2027"), "test")
    with pytest.raises(AuthenticationFailed):
        ca_service.accounts.check_password("activation-holder-4", Secret("Ra-created-1"), "test")
    assert ca_service.accounts.check_revocation_phrase("activation-holder-4", Secret("NewPhrase2027"))
    # The new key is sealed to the new password: the holder signs with it.
    application, _ = ca_service.applications.create("activation-app", otp_required=False)
    digest = hashlib.sha256(b"after the renewal").digest()
    token = ca_service.signer.authorize(application, "activation-holder-4", Secret("Renewed-2027"), None,
                                        renewed.credential_id, HashAlgorithm.SHA256, [digest])
    signature, = ca_service.signer.sign_hashes(application, renewed.credential_id, Secret(token.token),
                                               SignatureAlgorithm.parse("ecdsa-sha256"), [digest])
    x509.load_der_x509_certificate(renewed.certificate).public_key().verify(
        signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def test_an_operator_renewal_needs_no_holder_fields(ra):
    issued = holder_with_certificate(ra, "activation-holder-5")
    assert renew(ra, issued.serial).predecessor_serial == issued.serial
