"""The RA's JSON API (Starlette): what the holder does in a renewal, plus /healthz. The holder's
pages come later from the same workflow. Errors become responses in one place (_error_response);
no client input produces a 500.

Every holder call carries the holder token of the renewal's notice e-mail as
``Authorization: Bearer <token>``; the renewal id in the path names the renewal but grants nothing.
A missing token, a wrong one, one no longer valid and a renewal that does not exist get the same
401, so that the answer tells nothing of which renewals exist.

Operator actions are not on this API: they go through `signserver ra` commands on the RA's host.
"""

from __future__ import annotations

import json
import logging

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from signserver.ra import errors
from signserver.ra.help_codes import help_code
from signserver.ra.registry import MAX_PHOTO_BYTES
from signserver.ra.workflow import ActivationSecrets, RenewalWorkflow, view

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 64 * 1024
MAX_PDF_BYTES = 20 * 1024 * 1024  # a one-page application with a signature or two and their chains


class BadRequest(errors.RaError):
    """The request itself is malformed (not JSON, a field missing or of the wrong type)."""


_STATUS: list[tuple[type[Exception], int, str]] = [
    (BadRequest, 400, "bad_request"),
    (errors.HolderNotAuthorised, 401, "not_authorised"),
    (errors.PhotoRefused, 422, "photo_refused"),
    (errors.IdentityNotFound, 409, "identity_not_found"),
    (errors.RegistryUnavailable, 503, "registry_unavailable"),
    (errors.RenewalNotFound, 404, "not_found"),
    (errors.ConcurrentUpdate, 409, "concurrent_update"),
    (errors.StepRefused, 409, "step_refused"),
    (errors.CodeRefused, 422, "code_refused"),
    (errors.ApplicationRefused, 422, "application_refused"),
    (errors.NotYetImplemented, 501, "not_implemented"),
    (errors.CoreUnavailable, 503, "core_unavailable"),
    (errors.StoreUnavailable, 503, "store_unavailable"),
    (errors.SettingsError, 503, "ra_misconfigured"),
]
REALM = 'Bearer realm="signserver-ra"'


def _error_response(exc: errors.RaError, provider: str = "") -> JSONResponse:
    """The JSON answer for ``exc``; a help code's guidance names ``provider`` (ra.provider_name)."""
    status, reason = next(((s, r) for cls, s, r in _STATUS if isinstance(exc, cls)), (400, "refused"))
    body = {"error": reason, "message": str(exc)}
    code = getattr(exc, "help_code", "")
    if code:
        body["help_code"] = code
        body["guidance"] = help_code(code).guidance_by_language(provider)
    headers = {"WWW-Authenticate": REALM} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def bearer_token(request: Request) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; "" when there is none."""
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _json(request: Request) -> dict:
    body = await _read(request, MAX_JSON_BYTES)
    if not body:
        return {}
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, an integer too long, nested too deep
        raise BadRequest("the body is not JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("the body is a JSON object")
    return value


async def _read(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _text(body: dict, name: str, required: bool = True) -> str:
    value = body.get(name, "")
    if not isinstance(value, str) or (required and not value):
        raise BadRequest(f"{name} is a non-empty string" if required else f"{name} is a string")
    try:
        value.encode("utf-8")  # JSON allows a lone surrogate ("\ud800"); UTF-8, and so the core's wire, does not
    except UnicodeEncodeError:
        raise BadRequest(f"{name} is not valid Unicode text") from None
    return value


def build_app(workflow: RenewalWorkflow, provider: str = "") -> Starlette:
    """The JSON API's routes over ``workflow``; ``provider``: the setting ra.provider_name, named
    in help codes' guidance."""
    def handler(work, holder: bool = True, outcome: bool = False):
        """``work`` as an endpoint; a holder's call (``holder``) only with the renewal's holder token.

        The token is checked before the body is read, so that nobody without it has the RA parse
        anything. Only the renewal itself (``outcome``) may still be read after the renewal's end,
        to learn how it ended; its documents may not."""
        async def endpoint(request: Request):
            renewal_id = request.path_params.get("renewal_id", "")
            try:
                if holder:
                    await run_in_threadpool(lambda: workflow.check_holder(renewal_id, bearer_token(request),
                                                                          reading=outcome))
                return await work(request, renewal_id)
            except errors.RaError as exc:
                return _error_response(exc, provider)
        return endpoint

    async def show(renewal_id: str, status: int = 200) -> JSONResponse:
        renewal = await run_in_threadpool(workflow.get, renewal_id)
        unverified = await run_in_threadpool(workflow.unverified_emails, renewal)
        return JSONResponse(view(renewal, unverified, provider), status_code=status)

    async def healthz(request, _):
        return JSONResponse({"status": "ok"})

    async def renewal(request, renewal_id):
        return await show(renewal_id)

    async def consent(request, renewal_id):
        await run_in_threadpool(workflow.record_consent, renewal_id)
        return await show(renewal_id)

    async def send_code(request, renewal_id):
        body = await _json(request)
        sent = await run_in_threadpool(workflow.send_code, renewal_id, _text(body, "address"))
        return JSONResponse({"sent": sent, "already_verified": not sent})

    async def verify_code(request, renewal_id):
        body = await _json(request)
        await run_in_threadpool(workflow.verify_code, renewal_id, _text(body, "address"), _text(body, "code"))
        return await show(renewal_id)

    async def registry(request, renewal_id):
        await run_in_threadpool(workflow.check_registry, renewal_id)
        return await show(renewal_id)

    async def face(request, renewal_id):
        # The Content-Type is not read: the workflow tells the photo by its bytes, as for the pages
        # (a phone's PNG sent as image/jpeg is a PNG), and refuses an empty one.
        photo = await _read(request, MAX_PHOTO_BYTES)
        await run_in_threadpool(workflow.compare_face, renewal_id, photo)
        return await show(renewal_id)

    async def agreement(request, renewal_id):
        body = await _json(request)
        if body.get("accepted") is not True:
            raise BadRequest("accepting the agreement is {\"accepted\": true}")
        await run_in_threadpool(workflow.accept_agreement, renewal_id)
        return await show(renewal_id)

    def pdf(record, signed: bool) -> Response:
        name = f"application-{record.renewal_id}{'-signed' if signed else ''}.pdf"
        return Response(record.signed_document if signed else record.document, media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="{name}"',
                                 "X-Content-SHA256": record.signed_sha256 if signed else record.document_sha256})

    async def application(request, renewal_id):
        return pdf(await run_in_threadpool(workflow.application_document, renewal_id), signed=False)

    async def signed_application(request, renewal_id):
        return pdf(await run_in_threadpool(workflow.signed_application, renewal_id), signed=True)

    async def sign_application(request, renewal_id):
        body = await _json(request)
        await run_in_threadpool(workflow.sign_application, renewal_id, _text(body, "password"),
                                _text(body, "otp", False))
        return await show(renewal_id)

    async def upload_application(request, renewal_id):
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/pdf":
            raise BadRequest("send the signed application as the body, with Content-Type: application/pdf")
        signed = await _read(request, MAX_PDF_BYTES)
        if not signed:
            raise BadRequest("the body is empty: send the signed application")
        await run_in_threadpool(workflow.upload_application, renewal_id, signed)
        return await show(renewal_id)

    async def activation(request, renewal_id):
        body = await _json(request)
        given = ActivationSecrets(password=_text(body, "password", False),
                                  new_password=_text(body, "new_password", False),
                                  revocation_phrase=_text(body, "revocation_phrase", False))
        await run_in_threadpool(workflow.start_activation, renewal_id, given, _text(body, "confirmation", False))
        return await show(renewal_id, status=202)

    base = "/renewals/{renewal_id:str}"
    routes = [
        Route("/healthz", handler(healthz, holder=False)),
        Route(base, handler(renewal, outcome=True)),
        Route(base + "/consent", handler(consent), methods=["POST"]),
        Route(base + "/codes", handler(send_code), methods=["POST"]),
        Route(base + "/codes/verify", handler(verify_code), methods=["POST"]),
        Route(base + "/registry", handler(registry), methods=["POST"]),
        Route(base + "/face", handler(face), methods=["POST"]),
        Route(base + "/agreement", handler(agreement), methods=["POST"]),
        Route(base + "/application", handler(application)),
        Route(base + "/application/signed", handler(signed_application)),
        Route(base + "/application/sign", handler(sign_application), methods=["POST"]),
        Route(base + "/application/upload", handler(upload_application), methods=["POST"]),
        Route(base + "/activation", handler(activation), methods=["POST"]),
    ]
    return Starlette(routes=routes)
