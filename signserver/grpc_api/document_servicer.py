"""DocumentService: PDFs streamed in, signed or verified, streamed back.

Documents pass through temporary files in the state directory, never whole in memory: the
working set is one chunk in, one chunk out, plus pyHanko's own buffers.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from signserver.errors import InvalidArgument
from signserver.grpc_api import convert
from signserver.grpc_api.caller import calling_application
from signserver.grpc_api.executor import BlockingCalls
from signserver.pades.document import PadesLevel
from signserver.pades.stamp import DEFAULT_BOX, StampOptions
from signserver.service import SignService
from signserver.v1 import document_pb2, document_pb2_grpc

CHUNK = 1 << 20


def stamp_options(stamp: document_pb2.Stamp, defaults: StampOptions) -> StampOptions:
    box = (stamp.x1, stamp.y1, stamp.x2, stamp.y2)
    page = stamp.page - 1 if stamp.page > 0 else (stamp.page if stamp.page < 0 else -1)
    return dataclasses.replace(
        defaults, visible=not stamp.invisible, caption=stamp.caption or defaults.caption,
        time_zone=stamp.time_zone or defaults.time_zone,
        reason=convert.text("reason", stamp.reason, required=False),
        location=convert.text("location", stamp.location, required=False),
        verification_url=convert.text("verification_url", stamp.verification_url, required=False, limit=2000),
        seal_png=stamp.seal_image or None, field_name=convert.text("field_name", stamp.field_name, required=False),
        page=page, box=box if any(box) else DEFAULT_BOX)


class DocumentServicer(document_pb2_grpc.DocumentServiceServicer):
    def __init__(self, service: SignService, hsm: BlockingCalls, accounts: BlockingCalls, spool: Path):
        self._service = service
        self._hsm = hsm
        self._accounts = accounts
        self._spool = spool
        self._max = service.config.pades.max_document_mb * 1024 * 1024

    async def _receive(self, chunks, target) -> int:
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > self._max:
                raise InvalidArgument(f"the document is too large: the limit is {self._max // (1024 * 1024)} MB")
            target.write(chunk)
        if size == 0:
            raise InvalidArgument("no document was sent")
        target.flush()
        return size

    async def SignPdf(self, request_iterator, context):
        app = await calling_application(context, self._service, self._accounts)
        header, chunks = await self._header_and_chunks(request_iterator)
        options = stamp_options(header.stamp, self._service.pades.default_stamp())
        level = PadesLevel.parse(header.level) if header.level else self._service.pades.default_level()
        self._spool.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self._spool) as source, tempfile.TemporaryFile(dir=self._spool) as output:
            await self._receive(chunks, source)
            digest = await self._accounts.run(
                self._service.pades.sign_pdf, app, convert.text("account", header.account, limit=64),
                convert.secret("password", header.password),
                convert.text("otp", header.otp, required=False, limit=16) or None,
                convert.text("credential_id", header.credential_id, limit=64), source, output, level, options)
            async for response in self._send(output, digest):
                yield response

    async def PrepareSignature(self, request_iterator, context):
        app = await calling_application(context, self._service, self._accounts)
        header, chunks = await self._header_and_chunks(request_iterator)
        self._spool.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self._spool) as source:
            await self._receive(chunks, source)
            pending = await self._hsm.run(
                self._service.pades.prepare_pdf, app,
                convert.text("credential_id", header.credential_id, limit=64), source,
                PadesLevel.parse(header.level) if header.level else self._service.pades.default_level(), stamp_options(header.stamp, self._service.pades.default_stamp()))
        return document_pb2.PrepareSignatureResponse(document_id=pending.id, digest=pending.digest,
                                                     expires_at=convert.timestamp(pending.expires_at))

    async def CompleteSignature(self, request, context):
        app = await calling_application(context, self._service, self._accounts)
        self._spool.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self._spool) as output:
            digest = await self._hsm.run(
                self._service.pades.complete_pdf, app, convert.text("document_id", request.document_id, limit=64),
                convert.secret("activation_token", request.activation_token), output)
            async for response in self._send(output, digest):
                yield response

    async def _header_and_chunks(self, request_iterator):
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("the first message must carry the header")

        async def chunks():
            async for message in request_iterator:
                if message.WhichOneof("part") != "chunk":
                    raise InvalidArgument("only the first message carries a header")
                yield message.chunk

        return first.header, chunks()

    @staticmethod
    async def _send(output, digest: bytes):
        size = output.seek(0, 2)
        output.seek(0)
        yield document_pb2.SignPdfResponse(result=document_pb2.SignPdfResult(size=size, sha256=digest))
        while chunk := output.read(CHUNK):
            yield document_pb2.SignPdfResponse(chunk=chunk)

    async def VerifyPdf(self, request_iterator, context):
        await calling_application(context, self._service, self._accounts)
        self._spool.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self._spool) as source:
            async def chunks():
                async for message in request_iterator:
                    yield message.chunk
            await self._receive(chunks(), source)
            reports = await self._hsm.run(self._service.pades.verify_pdf, source)
        return document_pb2.VerifyPdfResponse(signatures=[_report(r) for r in reports])


def _report(report) -> document_pb2.SignatureReport:
    values = {f.name: getattr(report, f.name) for f in dataclasses.fields(report)}
    return document_pb2.SignatureReport(**{k: v for k, v in values.items() if v is not None})
