"""CertificateService: the registration authority's calls, for RA certificates only. Each call
that changes something is admitted once (its nonce, its time) and its evidence recorded before it
runs (signserver/ca/ra_requests.py)."""

from __future__ import annotations

import datetime
import functools

from signserver.accounts.manager import Enrolment
from signserver.accounts.model import AccountKind, AccountStatus
from signserver.ca.authority import CertificateRequest, HolderActivation
from signserver.ca.ra_requests import RaEvidence, RaRequest
from signserver.ca.repository import IssuedCertificate
from signserver.errors import InvalidArgument
from signserver.grpc_api import convert
from signserver.grpc_api.caller import check_balancer, client_certificate_pem, still_waiting
from signserver.blocking_calls import BlockingCalls
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.secret import Secret
from signserver.service import SignService
from signserver.v1 import certificate_pb2, certificate_pb2_grpc

MAX_CSR = 64 * 1024
# A century: longer than any certificate this CA issues lives, short enough for any date.
MAX_EXPIRY_WINDOW_DAYS = 36_500


def _certificate(issued: IssuedCertificate) -> certificate_pb2.Certificate:
    return certificate_pb2.Certificate(
        serial=issued.serial, profile=issued.profile, account=issued.account or "",
        credential_id=issued.credential_id or "", subject=issued.subject,
        not_before=convert.timestamp(issued.not_before), not_after=convert.timestamp(issued.not_after),
        status=issued.status, revoked_at=convert.timestamp(issued.revoked_at),
        revocation_reason=issued.revocation_reason or "", predecessor_serial=issued.predecessor_serial or "",
        certificate=issued.der)


def _csr(value: bytes) -> bytes | None:
    if len(value) > MAX_CSR:
        raise InvalidArgument(f"a CSR has at most {MAX_CSR} bytes")
    return value or None


def _evidence(message: certificate_pb2.RaEvidence) -> RaEvidence:
    return RaEvidence(
        registry_match=message.registry_match,
        face_score=message.face_score if message.HasField("face_score") else None,
        email_verifications=tuple((v.address, _moment(v.verified_at, "evidence.email_verifications.verified_at"))
                                  for v in message.email_verifications),
        application_sha256=message.application_sha256 or None, reference=message.reference)


def _moment(value, field: str):
    """Raises: InvalidArgument: a time no datetime holds."""
    try:
        return value.ToDatetime(tzinfo=datetime.timezone.utc)
    except (ValueError, OverflowError):
        raise InvalidArgument(f"{field} is not a valid time", field=field) from None


def _optional_secret(field: str, value: str) -> Secret | None:
    return convert.secret(field, value) if value else None


def _expiry_window(days: int) -> int | None:
    """Raises: InvalidArgument: a window past any date a certificate can have."""
    if days > MAX_EXPIRY_WINDOW_DAYS:
        raise InvalidArgument(f"expiring_within_days is at most {MAX_EXPIRY_WINDOW_DAYS} (a century)")
    return days or None


class CertificateServicer(certificate_pb2_grpc.CertificateServiceServicer):
    """The RA's calls. What only reads or writes the database (who the caller is, the request's
    admission, a certificate or a page of them, a holder's revocation) runs on the accounts pool:
    the HSM's threads are for what needs the HSM (issuing, renewing, an operator's revocation), so
    an RA's reads never wait behind signatures."""

    def __init__(self, service: SignService, hsm: BlockingCalls, accounts: BlockingCalls):
        self._service = service
        self._hsm = hsm
        self._accounts = accounts

    async def _operator(self, context) -> str:
        """The RA operator calling, named by its client certificate.

        Raises: as RaRequests.identify: Unauthenticated (no certificate at all: NoCredentials; an
        expired, revoked or unreadable one), PermissionDenied (a certificate that is not an RA's).
        """
        await check_balancer(context, self._service, self._accounts)
        pem = client_certificate_pem(context, self._service.config.tls.balancer_cert_sha256)
        name = await self._accounts.run(self._service.ca.identify_ra, pem)
        return f"ra:{name}"

    async def _admit(self, context, operator: str, method: str, subject: str, request) -> None:
        """Spend the request's nonce and record its evidence before the change.

        Raises: InvalidArgument (no nonce or time, bad evidence), RequestReplayed, RequestOutOfWindow.
        """
        if not request.HasField("requested_at"):
            raise InvalidArgument("requested_at is required: the moment the RA made the request",
                                  field="requested_at")
        admitted = RaRequest(operator=operator, method=method, subject=subject[:200],
                             nonce=convert.text("nonce", request.nonce, limit=128),
                             requested_at=_moment(request.requested_at, "requested_at"),
                             evidence=_evidence(request.evidence))
        await self._accounts.run(self._service.ca.ra_requests.admit, admitted, caller_check=still_waiting(context))

    async def CreateAccount(self, request, context):
        operator = await self._operator(context)
        try:
            kind = AccountKind(request.kind or "personal")
        except ValueError:
            raise InvalidArgument("kind is personal, corporate or government") from None
        enrolment = Enrolment(
            username=convert.text("account", request.account, limit=64),
            holder_name=convert.text("holder_name", request.holder_name), emails=tuple(request.emails),
            kind=kind, organisation=convert.text("organisation", request.organisation, required=False),
            department=convert.text("department", request.department, required=False),
            title=convert.text("title", request.title, required=False),
            given_name=convert.text("given_name", request.given_name, required=False),
            surname=convert.text("surname", request.surname, required=False),
            key_algorithm=KeyAlgorithm.parse(request.key_algorithm or "rsa-2048"),
            revocation_phrase=Secret(request.revocation_phrase) if request.revocation_phrase else None,
            recovery_by_code=not request.no_recovery_code)
        password = convert.secret("password", request.password)
        await self._admit(context, operator, "CreateAccount", enrolment.username, request)
        created = await self._accounts.run(self._service.accounts.create, enrolment, password, operator,
                                           caller_check=still_waiting(context))
        return certificate_pb2.CreateAccountResponse(account=created.account.username,
                                                     credential_id=created.credential.id,
                                                     otp_uri=created.otp_uri, recovery_code=created.recovery_code)

    async def IssueCertificate(self, request, context):
        operator = await self._operator(context)
        wanted = CertificateRequest(
            profile=convert.text("profile", request.profile, limit=64),
            username=convert.text("account", request.account, limit=64), csr=_csr(request.csr),
            transaction_limit=request.transaction_limit or None,
            agent_qualification=convert.text("agent_qualification", request.agent_qualification, required=False))
        await self._admit(context, operator, "IssueCertificate", wanted.username, request)
        issued = await self._hsm.run(self._service.ca.issue, wanted, operator, caller_check=still_waiting(context))
        return _certificate(issued)

    async def RenewCertificate(self, request, context):
        operator = await self._operator(context)
        serial = convert.text("serial", request.serial, limit=64)
        csr = _csr(request.csr)
        activation = HolderActivation(
            holder_password=_optional_secret("holder_password", request.holder_password),
            new_password=_optional_secret("new_password", request.new_password),
            revocation_phrase=_optional_secret("revocation_phrase", request.revocation_phrase))
        await self._admit(context, operator, "RenewCertificate", serial, request)
        issued = await self._hsm.run(self._service.ca.renew, serial, operator, csr=csr, activation=activation,
                                     caller_check=still_waiting(context))
        return _certificate(issued)

    async def RevokeCertificate(self, request, context):
        operator = await self._operator(context)
        serial = convert.text("serial", request.serial, limit=64)
        reason = request.reason or "unspecified"
        holder = convert.text("account", request.account, limit=64) if request.revocation_phrase else ""
        await self._admit(context, operator, "RevokeCertificate", serial, request)
        if request.revocation_phrase:
            issued = await self._accounts.run(self._service.ca.revoke_by_holder, serial, holder,
                                              convert.secret("revocation_phrase", request.revocation_phrase), reason,
                                              caller_check=still_waiting(context))
        else:
            issued = await self._hsm.run(functools.partial(self._service.ca.revoke, holders_only=True), serial, reason,
                                         operator, caller_check=still_waiting(context))
        return _certificate(issued)

    async def GetCertificate(self, request, context):
        await self._operator(context)
        serial = convert.text("serial", request.serial, limit=64)
        # An RA's view: holders' certificates and RAs' (authority.RA_SHOWN_PROFILES); any other is
        # NOT_FOUND, as an unknown serial.
        return _certificate(await self._accounts.run(functools.partial(self._service.ca.get, for_ra=True), serial,
                                                     caller_check=still_waiting(context)))

    async def ListCertificates(self, request, context):
        await self._operator(context)
        # Holders' certificates only, as an RA revokes: its operators' pages and searches are of holders.
        usernames = [convert.text("accounts", name, limit=64) for name in request.accounts]
        page = await self._accounts.run(functools.partial(self._service.ca.list_page, holders_only=True,
                                                          usernames=usernames),
                                        request.account or None, _expiry_window(request.expiring_within_days),
                                        request.page_size, request.page_token, request.status,
                                        caller_check=still_waiting(context))
        return certificate_pb2.ListCertificatesResponse(certificates=[_certificate(c) for c in page.certificates],
                                                        next_page_token=page.next_page_token)

    async def UnlockAccount(self, request, context):
        operator = await self._operator(context)
        account = convert.text("account", request.account, limit=64)
        recovery_code = convert.secret("recovery_code", request.recovery_code)
        new_password = convert.secret("new_password", request.new_password)
        await self._admit(context, operator, "UnlockAccount", account, request)
        # Not started for a client that gave up: the new code it returns would reach nobody.
        code = await self._accounts.run(self._service.accounts.unlock_with_recovery_code, account, recovery_code,
                                        new_password, operator, caller_check=still_waiting(context))
        return certificate_pb2.UnlockAccountResponse(recovery_code=code)

    async def AuthenticateHolder(self, request, context):
        operator = await self._operator(context)
        # As Authorize takes them: an empty OTP is a wrong factor (counted), not a malformed request.
        account = await self._accounts.run(
            self._service.accounts.authenticate, convert.text("account", request.account, limit=64),
            convert.secret("password", request.password),
            convert.text("otp", request.otp, required=False, limit=16), operator,
            caller_check=still_waiting(context))
        return certificate_pb2.HolderIdentity(account=account.username, holder_name=account.holder_name,
                                              given_name=account.given_name, surname=account.surname,
                                              emails=list(account.emails),
                                              password_changed_at=convert.timestamp(account.password_changed_at))

    async def GetHolderStanding(self, request, context):
        await self._operator(context)
        account = await self._accounts.run(self._service.accounts.get,
                                           convert.text("account", request.account, limit=64),
                                           caller_check=still_waiting(context))
        return certificate_pb2.HolderStanding(account=account.username,
                                              password_changed_at=convert.timestamp(account.password_changed_at),
                                              disabled=account.status is AccountStatus.DISABLED)

    async def ChangeHolderPassword(self, request, context):
        operator = await self._operator(context)
        # AccountService.ChangePassword's change with no OTP (document 000's page asks none). No
        # nonce: the current password is the proof, and a replay fails once it has changed.
        await self._accounts.run(
            self._service.accounts.change_password, convert.text("account", request.account, limit=64),
            old=convert.secret("current_password", request.current_password),
            new=convert.secret("new_password", request.new_password),
            confirmation=convert.secret("confirm_new_password", request.confirm_new_password),
            otp_code=None, otp_required=False, actor=operator, caller_check=still_waiting(context))
        return certificate_pb2.ChangeHolderPasswordResponse()
