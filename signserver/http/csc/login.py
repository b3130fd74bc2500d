"""auth/login, auth/revoke and the OAuth 2.0 token endpoint (client credentials): how an
application gets the bearer access token it sends with every other request.

A login over a connection with the application's client certificate gets a token bound to that
certificate (RFC 8705). A refused login is answered as RFC 6749 (5.2) answers a client that
failed to authenticate: 401 ``invalid_client`` with a Basic challenge, one sentence whatever was
wrong. The answers carry a token: no cache may keep them (see no_store.py).
"""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict
from starlette.responses import JSONResponse

from signserver.accounts.access_tokens import SERVICE_SCOPE
from signserver.accounts.model import Application
from signserver.errors import InvalidArgument, Unauthenticated
from signserver.http.csc.auth import calling_application, has_token_form, logging_in_application
from signserver.http.csc.context import CscContext, csc_context, context_of
from signserver.http.csc.errors import error_response
from signserver.secret import Secret

router = APIRouter(tags=["auth"])
oauth2_router = APIRouter(tags=["auth"])


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    refresh_token: str | None = None
    rememberMe: bool | None = None
    clientData: str | None = None


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    token: str
    token_type_hint: str | None = None
    clientData: str | None = None


@router.post("/auth/login", summary="Get an access token with HTTP Basic or a client certificate")
async def login(request: Request, body: LoginRequest | None = None) -> Response:
    """HTTP Basic: the application's name and its API key; or its client certificate; or both,
    of one application. No refresh token is issued: log in again when the access token expires.

    Raises: InvalidArgument (a refresh token). A refused login is answered 401 invalid_client.
    """
    context = context_of(request)
    if body is not None and body.refresh_token:
        raise InvalidArgument("refresh tokens are not issued here: log in again with the application's credentials")
    try:
        application, certificate_sha256 = await logging_in_application(request)
    except Unauthenticated as refused:
        return _client_refused(refused)
    issued = await context.accounts.run(context.service.access_tokens.issue, application,
                                        certificate_sha256=certificate_sha256)
    return JSONResponse({"access_token": issued.token, "expires_in": issued.lifetime_seconds})


@router.post("/auth/revoke", status_code=204, response_class=Response,
             summary="Revoke an access token of the calling application")
async def revoke(body: RevokeRequest, application: Application = Depends(calling_application),
                 context: CscContext = Depends(csc_context)) -> Response:
    """A token of another application, or an unknown one, is left alone (and said nothing of).

    Raises: Unauthenticated, InvalidArgument (a refresh token: none is ever issued).
    """
    if body.token_type_hint not in (None, "access_token"):
        raise InvalidArgument("only access tokens are issued here, so only they are revoked")
    if has_token_form(body.token):  # anything else was never issued: answered as an unknown token is
        await context.accounts.run(context.service.access_tokens.revoke, application, body.token)
    return Response(status_code=204)


TOKEN_PATH = "/oauth2/token"
# The endpoint reads its form itself (see _form): the OpenAPI document is told of it here.
TOKEN_FORM = {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "client_id": {"type": "string", "description": "the application's name (or in HTTP Basic)"},
        "client_secret": {"type": "string", "description": "its API key (or in HTTP Basic)"},
        "scope": {"type": "string", "enum": [SERVICE_SCOPE], "default": SERVICE_SCOPE}}}}}}


@oauth2_router.post(TOKEN_PATH, summary="OAuth 2.0 client credentials grant (scope: service)",
                    openapi_extra={"requestBody": TOKEN_FORM})
async def token(request: Request) -> Response:
    """A form (``application/x-www-form-urlencoded``) with grant_type=client_credentials, the
    application's name as client_id and its API key as client_secret (or both in HTTP Basic),
    and scope ``service`` (the default). Errors follow RFC 6749, section 5.2."""
    context = context_of(request)
    form = await _form(request)
    grant = form.get("grant_type")
    if grant != "client_credentials":
        return error_response(400, "unsupported_grant_type", "only grant_type=client_credentials is supported",
                              InvalidArgument)
    scope = form.get("scope") or SERVICE_SCOPE
    if scope != SERVICE_SCOPE:
        return error_response(400, "invalid_scope", f"the only scope is {SERVICE_SCOPE!r}", InvalidArgument)
    key = None
    if form.get("client_id") is not None:
        key = (str(form.get("client_id")), Secret(str(form.get("client_secret") or "")))
    try:
        application, certificate_sha256 = await logging_in_application(request, key)
    except Unauthenticated as refused:
        return _client_refused(refused)
    issued = await context.accounts.run(context.service.access_tokens.issue, application, scope,
                                        certificate_sha256)
    return JSONResponse({"access_token": issued.token, "token_type": "Bearer",
                         "expires_in": issued.lifetime_seconds, "scope": scope})


def _client_refused(refused: Unauthenticated) -> Response:
    """RFC 6749, 5.2: the client failed to authenticate."""
    return error_response(401, "invalid_client", str(refused), type(refused),
                          headers={"WWW-Authenticate": 'Basic realm="signserver"'})


MAX_FORM_BYTES = 4096


async def _form(request: Request) -> dict[str, str]:
    """The fields of a small urlencoded form (each field's first value).

    Raises: InvalidArgument: not a form, too long, or not UTF-8.
    """
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise InvalidArgument("the token request is a form (application/x-www-form-urlencoded)")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise InvalidArgument(f"the token request has more than {MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgument("the token request is not a UTF-8 form") from None
    return {name: values[0] for name, values in fields.items()}
