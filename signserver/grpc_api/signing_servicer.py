"""SigningService: credentials, Authorize (activation tokens) and SignHash."""

from __future__ import annotations

from signserver.grpc_api import convert
from signserver.grpc_api.caller import calling_application
from signserver.grpc_api.executor import BlockingCalls
from signserver.secret import Secret
from signserver.service import SignService
from signserver.v1 import signing_pb2, signing_pb2_grpc


# A SignHash of this many digests is short enough (about 2 ms with RSA-2048) to run on the event
# loop when the HSM is free: see BlockingCalls.run_short.
SHORT_CALL_DIGESTS = 4


class SigningServicer(signing_pb2_grpc.SigningServiceServicer):
    def __init__(self, service: SignService, hsm: BlockingCalls, accounts: BlockingCalls):
        self._service = service
        self._hsm = hsm
        self._accounts = accounts

    async def ListCredentials(self, request, context):
        app = await calling_application(context, self._service, self._accounts)
        account = convert.text("account", request.account, limit=64)
        token = convert.text("activation_token", request.activation_token, required=False)
        credentials = await self._accounts.run(self._service.signer.credentials_shown_to, app, account,
                                               Secret(token) if token else None)
        return signing_pb2.ListCredentialsResponse(credentials=[convert.credential(c) for c in credentials])

    async def GetCredentialInfo(self, request, context):
        app = await calling_application(context, self._service, self._accounts)
        credential_id = convert.text("credential_id", request.credential_id, limit=64)
        info = await self._hsm.run(self._service.signer.credential_info, app, credential_id)
        return signing_pb2.CredentialInfo(
            credential=convert.credential(info.credential), public_key=info.public_key_der,
            signature_algorithms=[a.value for a in info.signature_algorithms])

    async def Authorize(self, request, context):
        app = await calling_application(context, self._service, self._accounts)
        issued = await self._accounts.run(
            self._service.signer.authorize, app,
            username=convert.text("account", request.account, limit=64),
            password=convert.secret("password", request.password),
            otp_code=convert.text("otp", request.otp, required=False, limit=16) or None,
            credential_id=convert.text("credential_id", request.credential_id, required=False, limit=64),
            hash_algorithm=convert.hash_algorithm(request.hash_algorithm),
            digests=list(request.digests))
        return signing_pb2.AuthorizeResponse(activation_token=issued.token,
                                             expires_at=convert.timestamp(issued.expires_at),
                                             signatures=issued.digests, credential_id=issued.credential_id)

    async def SignHash(self, request, context):
        app = await calling_application(context, self._service, self._accounts)
        digests = list(request.digests)
        run = self._hsm.run_short if len(digests) <= SHORT_CALL_DIGESTS else self._hsm.run
        signatures = await run(
            self._service.signer.sign_hashes, app,
            credential_id=convert.text("credential_id", request.credential_id, limit=64),
            token=convert.secret("activation_token", request.activation_token),
            algorithm=convert.signature_algorithm(request.signature_algorithm),
            digests=digests)
        return signing_pb2.SignHashResponse(signatures=signatures)
