"""CertificateService: the registration authority's calls, for RA certificates only."""

from __future__ import annotations

from signserver.accounts.manager import Enrolment
from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
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


def _expiry_window(days: int) -> int | None:
    """Raises: InvalidArgument: a window past any date a certificate can have."""
    if days > MAX_EXPIRY_WINDOW_DAYS:
        raise InvalidArgument(f"expiring_within_days is at most {MAX_EXPIRY_WINDOW_DAYS} (a century)")
    return days or None


class CertificateServicer(certificate_pb2_grpc.CertificateServiceServicer):
    def __init__(self, service: SignService, hsm: BlockingCalls, accounts: BlockingCalls):
        self._service = service
        self._hsm = hsm
        self._accounts = accounts

    async def _operator(self, context) -> str:
        await check_balancer(context, self._service, self._hsm)
        pem = client_certificate_pem(context, self._service.config.tls.balancer_cert_sha256)
        name = await self._hsm.run(self._service.ca.identify_ra, pem)
        return f"ra:{name}"

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
        created = await self._accounts.run(self._service.accounts.create, enrolment,
                                           convert.secret("password", request.password), operator)
        return certificate_pb2.CreateAccountResponse(account=created.account.username,
                                                     credential_id=created.credential.id,
                                                     otp_uri=created.otp_uri, recovery_code=created.recovery_code)

    async def IssueCertificate(self, request, context):
        operator = await self._operator(context)
        issued = await self._hsm.run(self._service.ca.issue, CertificateRequest(
            profile=convert.text("profile", request.profile, limit=64),
            username=convert.text("account", request.account, limit=64), csr=_csr(request.csr),
            transaction_limit=request.transaction_limit or None,
            agent_qualification=convert.text("agent_qualification", request.agent_qualification, required=False)),
            operator, caller_check=still_waiting(context))
        return _certificate(issued)

    async def RenewCertificate(self, request, context):
        operator = await self._operator(context)
        issued = await self._hsm.run(self._service.ca.renew, convert.text("serial", request.serial, limit=64),
                                     operator, csr=_csr(request.csr), caller_check=still_waiting(context))
        return _certificate(issued)

    async def RevokeCertificate(self, request, context):
        operator = await self._operator(context)
        serial = convert.text("serial", request.serial, limit=64)
        reason = request.reason or "unspecified"
        if request.revocation_phrase:
            issued = await self._accounts.run(self._service.ca.revoke_by_holder, serial,
                                              convert.text("account", request.account, limit=64),
                                              Secret(request.revocation_phrase), reason)
        else:
            issued = await self._hsm.run(self._service.ca.revoke, serial, reason, operator,
                                         caller_check=still_waiting(context))
        return _certificate(issued)

    async def GetCertificate(self, request, context):
        await self._operator(context)
        return _certificate(await self._hsm.run(self._service.ca.get, convert.text("serial", request.serial, limit=64)))

    async def ListCertificates(self, request, context):
        await self._operator(context)
        found = await self._hsm.run(self._service.ca.list, request.account or None,
                                    _expiry_window(request.expiring_within_days))
        return certificate_pb2.ListCertificatesResponse(certificates=[_certificate(c) for c in found])

    async def UnlockAccount(self, request, context):
        operator = await self._operator(context)
        code = await self._accounts.run(
            self._service.accounts.unlock_with_recovery_code, convert.text("account", request.account, limit=64),
            convert.secret("recovery_code", request.recovery_code),
            convert.secret("new_password", request.new_password), operator)
        return certificate_pb2.UnlockAccountResponse(recovery_code=code)
