"""InfoService: what the server is and what it offers."""

from __future__ import annotations

from signserver.blocking_calls import BlockingCalls
from signserver.grpc_api.caller import check_client_certificate
from signserver.service import SignService
from signserver.v1 import info_pb2, info_pb2_grpc


class InfoServicer(info_pb2_grpc.InfoServiceServicer):
    def __init__(self, service: SignService, hsm: BlockingCalls, accounts: BlockingCalls, worker: int = 0):
        self._service = service
        self._hsm = hsm
        self._accounts = accounts  # the database's reads, such as a certificate's status
        self._worker = worker

    async def ServerInfo(self, request, context):
        await check_client_certificate(context, self._service, self._accounts)
        info = await self._hsm.run(self._service.server_info)
        return info_pb2.ServerInfoResponse(
            version=info.version,
            token=info_pb2.TokenInfo(label=info.token_label, model=info.token_model,
                                     manufacturer=info.token_manufacturer),
            key_algorithms=[a.value for a in info.key_algorithms],
            signature_algorithms=[a.value for a in info.signature_algorithms],
            worker=self._worker,
        )
