"""SigningService: credentials, Authorize (activation tokens) and SignHash."""

from __future__ import annotations

from signserver.grpc_api import convert
from signserver.grpc_api.caller import calling_application, still_waiting
from signserver.blocking_calls import BlockingCalls
from signserver.secret import Secret
from signserver.service import SignService
from signserver.signing.activation import check_digests
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
        credentials = await self._accounts.run(self._service.credentials.credentials_shown_to, app, account,
                                               Secret(token) if token else None,
                                               caller_check=still_waiting(context))
        return signing_pb2.ListCredentialsResponse(credentials=[convert.credential(c) for c in credentials])

    async def GetCredentialInfo(self, request, context):
        app = await calling_application(context, self._service, self._accounts)
        credential_id = convert.text("credential_id", request.credential_id, limit=64)
        details = await self._hsm.run(self._service.credential_details, app, credential_id,
                                      caller_check=still_waiting(context))
        info = details.info
        return signing_pb2.CredentialInfo(
            credential=convert.credential(info.credential), public_key=info.public_key_der,
            signature_algorithms=[a.value for a in info.signature_algorithms],
            certificates=[convert.certificate_der(c) for c in details.certificates])

    async def Authorize(self, request, context):
        app = await calling_application(context, self._service, self._accounts)
        username = convert.text("account", request.account, limit=64)
        password = convert.secret("password", request.password)
        otp_code = convert.text("otp", request.otp, required=False, limit=16) or None
        credential_id = convert.text("credential_id", request.credential_id, required=False, limit=64)
        hash_algorithm = convert.hash_algorithm(request.hash_algorithm)
        digests = self._checked_digests(request.digests, hash_algorithm)
        issued = await self._accounts.run(
            self._service.signer.authorize, app, username=username, password=password, otp_code=otp_code,
            credential_id=credential_id, hash_algorithm=hash_algorithm, digests=digests,
            caller_check=still_waiting(context))
        return signing_pb2.AuthorizeResponse(activation_token=issued.token,
                                             expires_at=convert.timestamp(issued.expires_at),
                                             signatures=issued.digests, credential_id=issued.credential_id)

    async def SignHash(self, request, context):
        app = await calling_application(context, self._service, self._accounts)
        credential_id = convert.text("credential_id", request.credential_id, limit=64)
        token = convert.secret("activation_token", request.activation_token)
        algorithm = convert.signature_algorithm(request.signature_algorithm)
        digests = list(request.digests)
        if algorithm.hash is not None:  # otherwise refused below, naming the algorithm
            digests = self._checked_digests(digests, algorithm.hash)
        run = self._hsm.run_short if len(digests) <= SHORT_CALL_DIGESTS else self._hsm.run
        # What the domain still refuses as an argument is the algorithm not fitting the key.
        with convert.field_named("signature_algorithm"):
            signatures = await run(self._service.signer.sign_hashes, app, credential_id=credential_id,
                                   token=token, algorithm=algorithm, digests=digests,
                                   caller_check=still_waiting(context))
        return signing_pb2.SignHashResponse(signatures=signatures)

    def _checked_digests(self, digests, algorithm) -> list[bytes]:
        """Checked here too (the domain checks them again), so that a refusal names the field.

        Raises: InvalidArgument: none, too many, duplicated, or of the wrong length."""
        digests = list(digests)
        with convert.field_named("digests"):
            check_digests(digests, algorithm, self._service.signer.max_signatures)
        return digests
