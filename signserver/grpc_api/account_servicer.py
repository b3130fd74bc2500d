"""AccountService: password change, recovery code and account status, for an application's users."""

from __future__ import annotations

from signserver.grpc_api import convert
from signserver.grpc_api.caller import calling_application, still_waiting
from signserver.blocking_calls import BlockingCalls
from signserver.service import SignService
from signserver.v1 import account_pb2, account_pb2_grpc


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    """A change whose client gave up before its turn in the password pool is not started: the
    holder's OTP stays unspent, and no recovery code is replaced that nobody would see."""

    def __init__(self, service: SignService, accounts: BlockingCalls):
        self._service = service
        self._accounts = accounts

    async def ChangePassword(self, request, context):
        app = await calling_application(context, self._service, self._accounts)
        account = convert.text("account", request.account, limit=64)
        self._service.applications.check_may_serve(app, account)
        await self._accounts.run(
            self._service.accounts.change_password, account,
            old=convert.secret("current_password", request.current_password),
            new=convert.secret("new_password", request.new_password),
            confirmation=convert.secret("confirm_new_password", request.confirm_new_password),
            otp_code=convert.text("otp", request.otp, required=False, limit=16) or None,
            otp_required=app.otp_required, actor=f"application:{app.name}", caller_check=still_waiting(context))
        return account_pb2.ChangePasswordResponse()

    async def ReplaceRecoveryCode(self, request, context):
        app = await calling_application(context, self._service, self._accounts)
        account = convert.text("account", request.account, limit=64)
        self._service.applications.check_may_serve(app, account)
        code = await self._accounts.run(
            self._service.accounts.replace_recovery_code, account,
            password=convert.secret("password", request.password),
            otp_code=convert.text("otp", request.otp, required=False, limit=16) or None,
            otp_required=app.otp_required, actor=f"application:{app.name}", caller_check=still_waiting(context))
        return account_pb2.ReplaceRecoveryCodeResponse(recovery_code=code)

    async def GetAccountStatus(self, request, context):
        app = await calling_application(context, self._service, self._accounts)
        username = convert.text("account", request.account, limit=64)
        self._service.applications.check_may_serve(app, username)
        if not app.names(username):
            # Only the lock, which every name has: nothing that says whether the account exists.
            lock = await self._accounts.run(self._service.accounts.lock_state, username)
            return account_pb2.AccountStatus(
                account=username, status="locked" if lock.locked_until else "active",
                locked_until=convert.timestamp(lock.locked_until), holder_fields_withheld=True)
        account = await self._accounts.run(self._service.accounts.get, username)
        return account_pb2.AccountStatus(
            account=account.username, holder_name=account.holder_name, given_name=account.given_name,
            surname=account.surname, status=account.status.value,
            locked_until=convert.timestamp(account.locked_until),
            password_changed_at=convert.timestamp(account.password_changed_at))
