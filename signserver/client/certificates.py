"""CertificateClient: the core's CertificateService for a registration authority, in plain Python
values.

Every call that changes something on the RA's word carries a fresh random nonce, the moment it
was made and the RA's evidence; the core refuses a request it has seen (or one too old) as a
replay. A holder's password change is proved by the holder's current password instead.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from signserver.client import _wire
from signserver.client.errors import from_rpc_error
from signserver.client.models import (
    CertificatePage,
    CertificateRecord,
    Evidence,
    HolderIdentity,
    HolderStanding,
    NewAccount,
    NewAccountResult,
)
from signserver.v1 import certificate_pb2, certificate_pb2_grpc

DEFAULT_TIMEOUT_SECONDS = 30.0
NONCE_BYTES = 24  # 192 random bits, 32 characters once encoded
T = TypeVar("T")


class Clock(Protocol):
    """Anything with ``now()`` returning an aware datetime (signserver.clock's clocks fit)."""

    def now(self) -> datetime.datetime: ...


class _SystemClock:
    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.timezone.utc)


class CertificateClient:
    """A client of a signserver's CertificateService, over mutual TLS with an RA client
    certificate (issued by the server's CA with `signserver ca issue-client --role ra`).

    ``root_certificates`` (PEM) are the CAs trusted for the server's certificate,
    ``client_certificate`` and ``client_key`` (PEM) the RA's; ``server_name`` overrides the name
    checked in the server's certificate. ``timeout_seconds`` bounds each call. ``clock`` gives the
    requests' time (the core refuses one more than 5 minutes off its own clock).

    Use it as a context manager, or call close(). Safe to share between threads. Every method
    raises a SignServerClientError subclass (signserver.client.errors) when the server refuses the
    call or it does not complete: PermissionRefused (not an RA certificate), AuthenticationRefused
    (an expired or revoked one), NotFound, InvalidArgument, CertificateRefused (a rule of the
    documents; ``help_code`` such as "AC-AB-0015"), RequestReplayed, ServerBusy, ServerUnreachable
    and ServerNotTrusted (no connection: nothing was sent), DeadlineExceeded.
    """

    def __init__(self, address: str, *, root_certificates: bytes, client_certificate: bytes, client_key: bytes,
                 timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, server_name: str | None = None,
                 clock: Clock | None = None):
        credentials = grpc.ssl_channel_credentials(root_certificates, private_key=client_key,
                                                   certificate_chain=client_certificate)
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        self._channel = grpc.secure_channel(address, credentials, options=options)
        self._stub = certificate_pb2_grpc.CertificateServiceStub(self._channel)
        self._timeout = timeout_seconds
        self._clock = clock or _SystemClock()
        self._address, self._server_name = address, server_name

    def __enter__(self) -> "CertificateClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    # Accounts

    def create_account(self, request: NewAccount, *, evidence: Evidence | None = None) -> NewAccountResult:
        """Enrol a holder: the account, its OTP seed, its first key (a signing data package) and,
        unless refused, a recovery code.

        Raises: AlreadyExists (the name is taken), InvalidArgument (a field breaks its rule, the
        password its rules), RequestReplayed, PermissionRefused.
        """
        response = self._call("CreateAccount", self._stub.CreateAccount, certificate_pb2.CreateAccountRequest(
            account=request.account, holder_name=request.holder_name, emails=list(request.emails), kind=request.kind,
            organisation=request.organisation, department=request.department, title=request.title,
            password=request.password, revocation_phrase=request.revocation_phrase,
            key_algorithm=request.key_algorithm, no_recovery_code=not request.recovery_code,
            given_name=request.given_name, surname=request.surname, **self._origin(evidence)))
        return NewAccountResult(account=response.account, credential_id=response.credential_id,
                                otp_uri=response.otp_uri, recovery_code=response.recovery_code)

    def unlock_account(self, account: str, recovery_code: str, new_password: str, *,
                       evidence: Evidence | None = None) -> str:
        """Clear the account's lock with the holder's recovery code and set a new password;
        returns the holder's new recovery code (the old one is spent).

        Raises: AuthenticationRefused (the code is not right, or the account has none; nothing
        changed), NotFound, InvalidArgument (the password's rules), RequestReplayed.
        """
        response = self._call("UnlockAccount", self._stub.UnlockAccount, certificate_pb2.UnlockAccountRequest(
            account=account, recovery_code=recovery_code, new_password=new_password, **self._origin(evidence)))
        return response.recovery_code

    def authenticate_holder(self, account: str, password: str, otp: str) -> HolderIdentity:
        """Check a holder's account, password and OTP as Authorize checks them (to sign the holder
        in to the RA's pages) and return who the holder is. The OTP's time step is spent; every
        refusal counts toward the account's lockout (5 wrong tries lock it 30 minutes).

        Raises: AuthenticationRefused (an unknown account or any wrong factor: one message, never
        saying which), AccountLocked (``locked_until``), AccountDisabled (a PermissionRefused; only
        when the factors are right), ServerBusy (the account's other attempts leave no turn: try
        again), InvalidArgument (an empty account or password, a field too long), PermissionRefused
        (not an RA certificate).
        """
        response = self._call("AuthenticateHolder", self._stub.AuthenticateHolder,
                              certificate_pb2.AuthenticateHolderRequest(account=account, password=password, otp=otp))
        return HolderIdentity(account=response.account, holder_name=response.holder_name,
                              given_name=response.given_name, surname=response.surname, emails=tuple(response.emails),
                              password_changed_at=_wire.moment(response.password_changed_at,
                                                               response.HasField("password_changed_at")))

    def holder_standing(self, account: str) -> HolderStanding:
        """Whether a holder's sign-in still stands: when the account's password was last set (by
        whatever route) and whether the account is disabled. Checks no factor, counts nothing.

        Raises: NotFound (no such account), InvalidArgument, PermissionRefused (not an RA
        certificate)."""
        response = self._call("GetHolderStanding", self._stub.GetHolderStanding,
                              certificate_pb2.GetHolderStandingRequest(account=account))
        return HolderStanding(account=response.account, disabled=response.disabled,
                              password_changed_at=_wire.moment(response.password_changed_at,
                                                               response.HasField("password_changed_at")))

    def change_password(self, account: str, current_password: str, new_password: str, confirmation: str) -> None:
        """Change a holder's password on the holder's behalf (the RA's password page, which asks
        no OTP): the current password is checked as Authorize checks it and each refusal counts
        toward the account's lockout (5 wrong tries lock it 30 minutes). The holder is e-mailed
        and outstanding activation tokens are revoked. It carries no nonce: the current password
        is the proof, and a replay fails once the password has changed.

        Raises: InvalidArgument (the confirmation differs, or the new password breaks a rule: at
        least 8 characters, a letter and a non-letter, not the account's name, not a common
        password, not the current one; checked before the password, counting nothing, and its
        ``rule`` names which), AuthenticationRefused (an unknown account or a wrong current
        password: one message), AccountLocked (``locked_until``), AccountDisabled (a
        PermissionRefused; only when the password is right), PermissionRefused (not an RA
        certificate), ServerBusy.
        """
        self._call("ChangeHolderPassword", self._stub.ChangeHolderPassword,
                   certificate_pb2.ChangeHolderPasswordRequest(
                       account=account, current_password=current_password, new_password=new_password,
                       confirm_new_password=confirmation))

    # Certificates

    def issue_certificate(self, account: str, profile: str, *, csr: bytes | None = None, transaction_limit: int = 0,
                          agent_qualification: str = "", evidence: Evidence | None = None) -> CertificateRecord:
        """Issue a certificate of ``profile`` (e.g. "cloud-signature-government") to the account;
        ``csr`` (PEM or DER) for profiles whose key is on the holder's card. ``transaction_limit``
        (MOP, 0: none) and ``agent_qualification`` belong to qualified certificates.

        Raises: NotFound (account), InvalidArgument (profile, CSR, options), CertificateRefused,
        RequestReplayed.
        """
        return _record(self._call("IssueCertificate", self._stub.IssueCertificate,
                                  certificate_pb2.IssueCertificateRequest(
                                      account=account, profile=profile, csr=csr or b"",
                                      transaction_limit=transaction_limit,
                                      agent_qualification=agent_qualification, **self._origin(evidence))))

    def renew_certificate(self, serial: str, *, evidence: Evidence, csr: bytes | None = None,
                          holder_password: str = "", new_password: str = "",
                          revocation_phrase: str = "") -> CertificateRecord:
        """A successor of the certificate with a new key pair. On the holder's online activation
        give ``revocation_phrase`` with ``holder_password`` (the current password; required while
        the account holds a valid cloud-signature certificate) or ``new_password`` (only when the
        account holds no valid certificate).

        Raises: AuthenticationRefused (a wrong holder_password, counted toward the lockout),
        AccountLocked, AlreadyRenewed (the certificate has a successor that is not revoked, perhaps
        from a request that ran at the same time: look it up by its predecessor_serial),
        CertificateRefused (help codes such as AC-AB-0015; a new password while a certificate is
        valid), NotFound, InvalidArgument, RequestReplayed.
        """
        return _record(self._call("RenewCertificate", self._stub.RenewCertificate,
                                  certificate_pb2.RenewCertificateRequest(
                                      serial=serial, csr=csr or b"", holder_password=holder_password,
                                      new_password=new_password, revocation_phrase=revocation_phrase,
                                      **self._origin(evidence))))

    def revoke_certificate(self, serial: str, reason: str, *, revocation_phrase: str = "", account: str = "",
                           evidence: Evidence | None = None) -> CertificateRecord:
        """Revoke a certificate (RFC 5280 reason name, e.g. "keyCompromise"): on the operator's
        decision, or by the holder with ``revocation_phrase`` and ``account``.

        Raises: PermissionRefused (a wrong phrase, or not the account's certificate),
        CertificateRefused (already revoked), NotFound, InvalidArgument, RequestReplayed.
        """
        return _record(self._call("RevokeCertificate", self._stub.RevokeCertificate,
                                  certificate_pb2.RevokeCertificateRequest(
                                      serial=serial, reason=reason, revocation_phrase=revocation_phrase,
                                      account=account, **self._origin(evidence))))

    def get_certificate(self, serial: str) -> CertificateRecord:
        """A holder's certificate or an RA's client certificate: the core shows an RA no other.

        Raises: NotFound (no such serial, or another's: an application's, the CA's own),
        InvalidArgument."""
        return _record(self._call("GetCertificate", self._stub.GetCertificate,
                                  certificate_pb2.GetCertificateRequest(serial=serial)))

    def list_certificates(self, account: str = "", expiring_within_days: int = 0,
                          status: str = "", *, accounts: Sequence[str] = ()) -> list[CertificateRecord]:
        """The account's certificates (every holder's when empty) in the order issued; with
        ``expiring_within_days``, only valid ones expiring within that many days; with ``status``
        ("valid", "expired", "revoked"), only those of that status. Every page is read: for every
        account's, :meth:`certificate_pages` keeps one page in memory at a time. ``accounts``
        instead of ``account``: the certificates of those accounts (at most 100) in one listing,
        each record naming its account; a name with no account is passed over.

        Raises: NotFound (account), InvalidArgument (a status not of a certificate; both account
        and accounts, or more than 100 accounts).
        """
        return [c for page in self.certificate_pages(account, expiring_within_days, status, accounts=accounts)
                for c in page]

    def certificate_pages(self, account: str = "", expiring_within_days: int = 0, status: str = "", *,
                          page_size: int = 0, accounts: Sequence[str] = ()) -> Iterator[list[CertificateRecord]]:
        """:meth:`list_certificates`' certificates a page at a time, each asked for when the one
        before has been taken (``page_size``: as :meth:`list_certificate_page`).

        Raises: as :meth:`list_certificates`, from the page it reads.
        """
        token = ""
        while True:
            page = self.list_certificate_page(account, expiring_within_days, status, page_size=page_size,
                                              page_token=token, accounts=accounts)
            yield page.certificates
            token = page.next_page_token
            if not token:
                return

    def list_certificate_page(self, account: str = "", expiring_within_days: int = 0, status: str = "", *,
                              page_size: int = 0, page_token: str = "", accounts: Sequence[str] = ()
                              ) -> CertificatePage:
        """One page of :meth:`list_certificates`' certificates: ``page_size`` of them (0: the
        server's default, 100; at most 1,000), from the page ``page_token`` names (an earlier
        page's ``next_page_token``, asked with the same account, days and status; empty: the
        first). The server chooses the status's certificates, so its pages are full of them.

        Raises: NotFound (account), InvalidArgument (a token not of this listing, a window too
        long, a status not of a certificate).
        """
        response = self._call("ListCertificates", self._stub.ListCertificates, certificate_pb2.ListCertificatesRequest(
            account=account, expiring_within_days=expiring_within_days, page_size=page_size, page_token=page_token,
            status=status, accounts=list(accounts)))
        # A server older than the status or the accounts filter ignores the field (as protobuf does
        # any it does not know) and answers every status or every account: the others are left out
        # here.
        asked = set(accounts)
        return CertificatePage([_record(c) for c in response.certificates
                                if (not status or c.status == status) and (not asked or c.account in asked)],
                               response.next_page_token)

    # Plumbing

    def _origin(self, evidence: Evidence | None) -> dict:
        """A fresh nonce, the request's time and the evidence: the fields every change carries."""
        requested_at = Timestamp()
        requested_at.FromDatetime(self._clock.now().astimezone(datetime.timezone.utc).replace(tzinfo=None))
        return {"nonce": secrets.token_urlsafe(NONCE_BYTES), "requested_at": requested_at,
                "evidence": _evidence(evidence or Evidence())}

    def _call(self, method: str, rpc: Callable[..., T], request) -> T:
        try:
            return rpc(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error, method, address=self._address, server_name=self._server_name) from None


def _evidence(evidence: Evidence) -> certificate_pb2.RaEvidence:
    message = certificate_pb2.RaEvidence(
        registry_match=evidence.registry_match, application_sha256=evidence.application_sha256 or b"",
        reference=evidence.reference)
    if evidence.face_score is not None:
        message.face_score = evidence.face_score
    for address, verified_at in evidence.email_verifications:
        verification = message.email_verifications.add(address=address)
        verification.verified_at.FromDatetime(verified_at.astimezone(datetime.timezone.utc).replace(tzinfo=None))
    return message


def _record(message: certificate_pb2.Certificate) -> CertificateRecord:
    return CertificateRecord(
        serial=message.serial, profile=message.profile, account=message.account,
        credential_id=message.credential_id, subject=message.subject,
        not_before=_wire.moment(message.not_before, message.HasField("not_before")),
        not_after=_wire.moment(message.not_after, message.HasField("not_after")), status=message.status,
        revoked_at=_wire.moment(message.revoked_at, message.HasField("revoked_at")),
        revocation_reason=message.revocation_reason, predecessor_serial=message.predecessor_serial,
        certificate_der=message.certificate)
