"""DocumentService: PDFs streamed in, signed or verified, streamed back.

Documents pass through temporary files in the state directory, never whole in memory: the
working set is one chunk in, one chunk out, plus pyHanko's own buffers. Document work never runs
in the pool that SignHash uses: signing jobs run in the documents pool, verifications in child
processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from signserver.descriptors import DescriptorReserve
from signserver.errors import InvalidArgument
from signserver.grpc_api import convert
from signserver.grpc_api.caller import calling_application, still_waiting
from signserver.blocking_calls import BlockingCalls, FairShares
from signserver.grpc_api.spool import SpoolFile
from signserver.admission import ConcurrencyLimit
from signserver.grpc_api.stream_limits import DocumentLimits, DocumentStreams, within_time
from signserver.pades.document import PadesLevel
from signserver.pades.stamp import DEFAULT_BOX, StampOptions
from signserver.pades.verifier_process import DEADLINE_MARGIN_SECONDS, VerifierProcesses
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
    """Document streams, bounded: so many open at once per worker and per application, each
    closed when its client pauses too long (sending or reading) or uploads for too long in all,
    spool files opened only once data arrives, none at all while descriptors run short. Signing jobs run in the documents pool, a fair share per
    application; verifications run in child processes (see VerifierProcesses)."""

    def __init__(self, service: SignService, accounts: BlockingCalls, documents: BlockingCalls, spool: Path,
                 limits: DocumentLimits = DocumentLimits(), verifier: VerifierProcesses | None = None):
        self._service = service
        self._accounts = accounts
        self._documents = documents
        self._spool = spool
        self._max = service.config.pades.max_document_mb * 1024 * 1024
        self._reserve = DescriptorReserve(limits.descriptor_reserve)
        self._streams = DocumentStreams(limits, self._reserve)
        self._verifications = ConcurrencyLimit("verifications", limits.verifications_per_worker,
                                               limits.verifications_per_application)
        self._shares = FairShares(limits.document_jobs_per_application)
        self._verifier = verifier or VerifierProcesses()

    def _spool_file(self, named: bool = False) -> SpoolFile:
        return SpoolFile(self._spool, self._reserve, named=named)

    async def _document_job(self, context, app, function, *args):
        """Raises: what ``function`` raises; ServerBusy (the documents pool is full);
        CallerGaveUp, DeadlineExceeded: the client gave up before the job's turn (not started)."""
        async with self._shares.turn(app.id):
            return await self._documents.run(function, app, *args, caller_check=still_waiting(context))

    async def _receive(self, chunks, target: SpoolFile) -> int:
        """Raises: InvalidArgument: nothing sent, or more than the limit (naming ``chunk``)."""
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > self._max:
                raise InvalidArgument(f"the document is too large: the limit is {self._max // (1024 * 1024)} MB",
                                      field="chunk")
            if chunk:
                await target.write_async(chunk)
        if size == 0:
            raise InvalidArgument("no document was sent", field="chunk")
        target.file().flush()
        return size

    async def SignPdf(self, request_iterator, context):
        app = await calling_application(context, self._service, self._accounts)
        with self._streams.admit(app.id):
            header, chunks = await self._header_and_chunks(request_iterator)
            options = stamp_options(header.stamp, self._service.pades.default_stamp())
            level = self._level(header)
            with self._spool_file() as source, self._spool_file() as output:
                await self._receive(chunks, source)
                digest = await self._document_job(
                    context, app, self._service.pades.sign_pdf, convert.text("account", header.account, limit=64),
                    convert.secret("password", header.password),
                    convert.text("otp", header.otp, required=False, limit=16) or None,
                    convert.text("credential_id", header.credential_id, limit=64), source.file(), output.file(),
                    level, options)
                async for response in self._send(context, output.file(), digest):
                    yield response

    async def PrepareSignature(self, request_iterator, context):
        app = await calling_application(context, self._service, self._accounts)
        with self._streams.admit(app.id):
            header, chunks = await self._header_and_chunks(request_iterator)
            with self._spool_file() as source:
                await self._receive(chunks, source)
                pending = await self._document_job(
                    context, app, self._service.pades.prepare_pdf, convert.text("credential_id", header.credential_id, limit=64),
                    source.file(), self._level(header), stamp_options(header.stamp, self._service.pades.default_stamp()))
        return document_pb2.PrepareSignatureResponse(document_id=pending.id, digest=pending.digest,
                                                     expires_at=convert.timestamp(pending.expires_at))

    async def CompleteSignature(self, request, context):
        app = await calling_application(context, self._service, self._accounts)
        with self._streams.admit(app.id), self._spool_file() as output:
            digest = await self._document_job(
                context, app, self._service.pades.complete_pdf, convert.text("document_id", request.document_id, limit=64),
                convert.secret("activation_token", request.activation_token), output.file())
            async for response in self._send(context, output.file(), digest):
                yield response

    def _level(self, header) -> PadesLevel:
        """Raises: InvalidArgument: an unknown level (naming ``level``)."""
        if not header.level:
            return self._service.pades.default_level()
        with convert.field_named("level"):
            return PadesLevel.parse(header.level)

    async def _header_and_chunks(self, request_iterator):
        """Raises: InvalidArgument: no header first, a second header, a later message without a
        chunk, the client paused too long (before the header as between chunks), or the whole
        upload took too long."""
        messages = self._within_time(request_iterator)
        first = await anext(messages, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("the first message must carry the header", field="header")

        async def chunks():
            async for message in messages:
                part = message.WhichOneof("part")
                if part == "header":
                    raise InvalidArgument("only the first message carries a header", field="header")
                if part != "chunk":
                    raise InvalidArgument("a message after the header carries no chunk: each carries a piece "
                                          "of the document", field="chunk")
                yield message.chunk

        return first.header, chunks()

    def _within_time(self, request_iterator):
        return within_time(request_iterator, self._streams.idle_seconds, self._streams.upload_seconds)

    async def _send(self, context, output, digest: bytes):
        """Write the result, then the document, each message taken by the client within the idle
        time. Written through the context rather than yielded, so that the wait for a client that
        stops reading (gRPC's flow control holds the write) can be bounded here.

        Raises: InvalidArgument: the client took nothing for the idle time.
        """
        size = output.seek(0, 2)
        output.seek(0)
        await self._write(context, document_pb2.SignPdfResponse(
            result=document_pb2.SignPdfResult(size=size, sha256=digest)))
        while chunk := output.read(CHUNK):
            await self._write(context, document_pb2.SignPdfResponse(chunk=chunk))
        return
        yield  # an async generator, like the handlers that call it, which yield nothing

    async def _write(self, context, response) -> None:
        """Raises: InvalidArgument: the client took nothing for the idle time."""
        try:
            async with asyncio.timeout(self._streams.idle_seconds):
                await context.write(response)
        except TimeoutError:
            raise InvalidArgument(f"the client read nothing for {self._streams.idle_seconds:g} s; "
                                  "the stream is closed. Read the document as it arrives") from None

    async def _verify(self, app, document: Path):
        """Verify in a child process, killed once past the verification's time limit plus a margin.

        Raises: InvalidArgument: unreadable, over a limit, or over time; ServerBusy: killed at its
        deadline with less CPU than its time limit (see VerifierProcesses.verify).
        """
        trust, limits = await self._documents.run(self._verification_inputs)
        return await self._verifier.verify(document, trust, limits, limits.max_seconds + DEADLINE_MARGIN_SECONDS)

    def _verification_inputs(self):
        # The trust material is read from the database and the CA here, in the worker: the child
        # gets plain bytes and never touches the HSM or the database.
        return self._service.pades.trust_material(), self._service.pades.verification_limits()

    async def VerifyPdf(self, request_iterator, context):
        app = await calling_application(context, self._service, self._accounts)
        with self._streams.admit(app.id), self._spool_file(named=True) as source:
            async def chunks():
                async for message in self._within_time(request_iterator):
                    yield message.chunk
            await self._receive(chunks(), source)
            # The verification's place is taken only once the document is here: an upload that
            # trickles holds a stream, never one of the few verifications a worker runs.
            with self._verifications.admit(app.id):
                verdict = await self._verify(app, source.path)
        return document_pb2.VerifyPdfResponse(signatures=[_report(r) for r in verdict.signatures],
                                              verdict=verdict.verdict, reason=verdict.reason)


def _report(report) -> document_pb2.SignatureReport:
    values = {f.name: getattr(report, f.name) for f in dataclasses.fields(report)}
    return document_pb2.SignatureReport(**{k: v for k, v in values.items() if v is not None})
