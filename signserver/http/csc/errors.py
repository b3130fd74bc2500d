"""The one place where signserver errors become CSC error answers.

CSC's shape is OAuth 2.0's: ``{"error": ..., "error_description": ...}`` with an HTTP status.
The ``error`` codes are the ones the CSC API names; signserver's own stable reason, where the
error carries one, travels beside them as ``error_reason``, and is the reason the call is counted
by in ``signserver_refusals_total`` (see :class:`CscErrorResponse`). Anything unexpected becomes a
500 with a generic description and the reason INTERNAL: the traceback goes to the log, never to the
client. A fault any client may repeat would flood the log: the first is logged with its traceback,
then at most one line a minute saying how many were left out (FaultLog), as on the other fronts.

What the client named and the server does not have (a credential, a responseID) is, as the CSC
API answers it, 400 ``invalid_request`` with a description ("Invalid parameter credentialID"),
not 404: 404 stays for paths that do not exist. An unknown credential, another holder's, and one
whose key is missing get one answer, which names no key.

A request whose body FastAPI cannot take (no JSON, no JSON object, a field missing or of the wrong
type) is 400 ``invalid_request`` whose description says so as a sentence: where a body that is
not JSON went wrong (line, column), each field by its path (``authData[0].id``), never the values
sent (:func:`validation_problem`).

A request that reaches the worker's memory bound (a MemoryError while its body is read or parsed,
or in its handler) is 429 ``too_many_requests`` with the reason MEMORY_EXHAUSTED and a
Retry-After, as gRPC answers it RESOURCE_EXHAUSTED: never a 400 of the framework's body parsing,
nor a 500 (:func:`memory_refusal`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Iterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from signserver import errors
from signserver.asgi_faults import mark_logged
from signserver.clock import Clock, SystemClock
from signserver.http.call_metrics import note_refusal
from signserver.memory_bound import MIB, memory_bound, recheck_memory_later, where_raised
from signserver.monitoring.fault_log import FaultLog

log = logging.getLogger(__name__)

GENERIC_SERVER_ERROR = "internal error; the server's log has the details"
# A busy server asks for a retry after this many seconds (HTTP Retry-After).
RETRY_AFTER_SECONDS = 1
# CSC's description of a credentialID the server does not serve to this application, whatever the
# reason: no such credential, another holder's, or a key gone missing.
UNKNOWN_CREDENTIAL = "Invalid parameter credentialID: no such credential is available to this application"
# The refusal of a request that brings no bearer token (none, or another scheme's credentials):
# RFC 6750 3 answers it with the bare challenge, without an error code.
NO_CREDENTIALS = ("send a bearer access token (from auth/login or oauth2/token) in the Authorization header, "
                  "or a registered client certificate")
# The field an InvalidArgument names when the Authorization header itself is malformed: RFC 6750
# 3.1's invalid_request, 400, with the challenge saying so.
AUTHORIZATION = "Authorization"


@dataclass(frozen=True)
class CscError:
    status: int
    error: str  # as the CSC API (and OAuth 2.0) names it


# Looked up along each error's class hierarchy: the most specific entry wins.
CSC_ERROR_BY_CLASS: dict[type[errors.SignServerError], CscError] = {
    errors.InvalidArgument: CscError(400, "invalid_request"),
    errors.ActivationRefused: CscError(400, "invalid_request"),  # CSC: "Invalid SAD"
    errors.CredentialUnusable: CscError(400, "invalid_request"),
    errors.CertificateRefused: CscError(400, "invalid_request"),
    errors.AlreadyExists: CscError(400, "invalid_request"),
    # The holder's factors (PIN, OTP) are request parameters in CSC, not the caller's token.
    errors.AuthenticationFailed: CscError(400, "invalid_request"),
    errors.Unauthenticated: CscError(401, "invalid_token"),
    errors.PermissionDenied: CscError(403, "access_denied"),
    errors.AccountLocked: CscError(403, "access_denied"),
    errors.AccountDisabled: CscError(403, "access_denied"),
    errors.NotFound: CscError(400, "invalid_request"),  # CSC: "Invalid parameter credentialID"
    errors.AuthenticationBusy: CscError(429, "too_many_requests"),
    errors.ServerBusy: CscError(429, "too_many_requests"),
    errors.TokenNotFound: CscError(503, "temporarily_unavailable"),  # the server's own token is missing
    errors.HsmUnavailable: CscError(503, "temporarily_unavailable"),
    errors.HsmLoginFailed: CscError(503, "temporarily_unavailable"),
    errors.HsmPinLocked: CscError(503, "temporarily_unavailable"),
    errors.StoreUnavailable: CscError(503, "temporarily_unavailable"),
    errors.ServerStopping: CscError(503, "temporarily_unavailable"),
    errors.UpstreamUnavailable: CscError(503, "temporarily_unavailable"),
    errors.HsmError: CscError(500, "server_error"),
    errors.DataCorrupted: CscError(500, "server_error"),
    errors.ConfigurationError: CscError(500, "server_error"),
    errors.SignServerError: CscError(500, "server_error"),
}
MAX_DESCRIPTION_CHARACTERS = 1000  # a message quoting the caller's input stays readable
# A request FastAPI's validation refuses: the problems told in its description (the rest counted).
MAX_VALIDATION_PROBLEMS = 5
JSON_TYPE = "application/json"
# The first word pydantic's messages name the value by.
_PYDANTIC_SUBJECTS = frozenset({"Input", "String", "List", "Tuple", "Set", "Dictionary", "Object", "Data",
                                "Value", "Decimal", "Number"})
# A part of a field's path shown as it is; any other (a key the client chose) is shown quoted,
# escaped and cut to MAX_KEY_EXCERPT characters.
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_KEY_EXCERPT = 32
_PLACES = {"query": "query parameter", "header": "header", "path": "path parameter", "cookie": "cookie"}
# The error class whose reason (INTERNAL) the answer to an unexpected fault carries.
UNEXPECTED = errors.SignServerError
# The server's own faults (500s), which a client may trigger again and again: logged with their
# traceback at most once a minute, the others counted (FaultLog). An app's own log is set by
# install_error_handlers; this one serves the answers made outside a request's handlers.
_FAULTS = FaultLog(log, SystemClock())


def csc_error_for(error: errors.SignServerError) -> CscError:
    """The CSC status and code for a signserver error."""
    for cls in type(error).__mro__:
        if cls in CSC_ERROR_BY_CLASS:
            return CSC_ERROR_BY_CLASS[cls]
    return CscError(500, "server_error")


class CscErrorResponse(JSONResponse):
    """A CSC error answer; ``refused_with``, the error class whose stable reason it carries, is
    noted on the request's scope as it is sent, so the call is counted by that reason (see
    signserver.http.call_metrics), whoever sends it: a handler, an endpoint or a middleware."""

    refused_with: type[errors.SignServerError] | None = None

    async def __call__(self, scope, receive, send) -> None:
        if self.refused_with is not None:
            note_refusal(scope, self.refused_with)
        await super().__call__(scope, receive, send)


def error_response(status: int, error: str, description: str,
                   refused_with: type[errors.SignServerError] | None = None,
                   headers: dict[str, str] | None = None, **extra) -> CscErrorResponse:
    """A CSC error answer; ``refused_with``: the signserver error class whose stable reason it
    carries as ``error_reason`` (and is counted by), None for an answer that carries none."""
    body = {"error": error, "error_description": description[:MAX_DESCRIPTION_CHARACTERS]}
    if refused_with is not None:
        body["error_reason"] = refused_with.reason
    body.update(extra)
    response = CscErrorResponse(body, status_code=status, headers=headers)
    response.refused_with = refused_with
    return response


def signserver_error_response(error: errors.SignServerError, faults: FaultLog | None = None) -> CscErrorResponse:
    """The CSC answer for a signserver error: its status, CSC code, message and stable reason. A
    fault of the server (500) is logged to ``faults`` (by default the module's), throttled."""
    mapped = csc_error_for(error)
    headers: dict[str, str] = {}
    extra = {}
    if mapped.status == 500:
        # The traceback is the exception being handled, when it is this one (FaultLog logs that).
        (faults or _FAULTS).record("CSC request failed: %s", error, with_traceback=sys.exc_info()[1] is error)
        description = GENERIC_SERVER_ERROR
    elif isinstance(error, errors.KeyNotFound):
        # Its message names a key id or label: the log keeps it, the client hears of its credential.
        log.warning("CSC request refused: %s", error)
        description = UNKNOWN_CREDENTIAL
    else:
        description = str(error)
    if mapped.status == 401:
        # RFC 6750 3: a request without bearer credentials learns the scheme; a token refused
        # (unknown, expired, revoked, bound to another certificate) learns it is invalid.
        headers["WWW-Authenticate"] = ("Bearer" if isinstance(error, errors.NoCredentials)
                                        else 'Bearer error="invalid_token"')
    elif isinstance(error, errors.InvalidArgument) and error.field == AUTHORIZATION:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_request"'
    if mapped.status in (429, 503):
        headers["Retry-After"] = str(errors.retry_after_seconds(error, RETRY_AFTER_SECONDS))
    if isinstance(error, errors.AccountLocked):
        extra["locked_until"] = error.until.isoformat(timespec="seconds")
        headers["Retry-After"] = format_datetime(error.until, usegmt=True)  # an HTTP-date: no clock needed here
    return error_response(mapped.status, mapped.error, description, type(error), headers or None, **extra)


@contextlib.contextmanager
def credential_lookup() -> Iterator[None]:
    """Around work that looks up the request's credentialID: any NotFound (no such credential, one
    of an account the application may not serve, its key or package missing) becomes the one
    answer :data:`UNKNOWN_CREDENTIAL`, the same for "not yours" and "no such".

    Raises: NotFound (UNKNOWN_CREDENTIAL); TokenNotFound (the server's own token) as it is.
    """
    try:
        yield
    except errors.TokenNotFound:
        raise
    except errors.NotFound as error:
        if isinstance(error, errors.KeyNotFound):
            log.warning("a credential's key was not found: %s", error)
        raise errors.NotFound(UNKNOWN_CREDENTIAL) from None


def memory_refusal(what: str, exc: MemoryError) -> errors.MemoryExhausted:
    """Log once, at ERROR, that ``what`` (a path) reached the worker's memory bound: where, never
    with what (no request content); the refusal to answer (429 MEMORY_EXHAUSTED)."""
    bound = memory_bound()
    where = where_raised(exc)
    limit = f"{bound // MIB} MiB" if bound is not None else "none set"
    log.error("CSC %s reached the worker's memory bound (%s; MemoryError at %s); refused with 429 MEMORY_EXHAUSTED",
              what, limit, where)
    recheck_memory_later()  # a worker that keeps its data near the bound is replaced
    return errors.MemoryExhausted(f"the request needs more memory than the server's worker may take ({limit}) with "
                                  "the work under way; it is refused: try again shortly, or with smaller documents")


async def _on_memory_error(request: Request, error: MemoryError) -> JSONResponse:
    return signserver_error_response(memory_refusal(request.url.path, error))


def _faults_of(request: Request) -> FaultLog:
    """The fault log install_error_handlers gave the request's app (the module's if none)."""
    return getattr(request.app.state, "csc_fault_log", None) or _FAULTS


async def _on_signserver_error(request: Request, error: errors.SignServerError) -> JSONResponse:
    return signserver_error_response(error, _faults_of(request))


def validation_problem(problem: dict, body: object = None) -> str:
    """One problem FastAPI's validation found (an item of ``RequestValidationError.errors()``), as a
    sentence that names the field by its path (``authData[0].id should be a valid string``) and
    never quotes the value sent. ``body``: the request's text, for where a body that is not JSON
    went wrong (FastAPI gives only the character's offset)."""
    kind = problem.get("type")
    location = tuple(problem.get("loc", ()))
    where = location[1:] if location[:1] == ("body",) else location
    if kind == "json_invalid":
        # FastAPI puts the offset where the path goes ("1: JSON decode error").
        reason = str((problem.get("ctx") or {}).get("error", "")).strip() or "it cannot be decoded"
        reason = reason[0].lower() + reason[1:]
        offset = where[0] if len(where) == 1 and isinstance(where[0], int) else None
        if offset is None:
            return f"the request body is not valid JSON: {reason}"
        return f"the request body is not valid JSON: {reason} at {_position(body, offset)}"
    if not where and location[:1] == ("body",):
        if kind == "missing":
            return "the request has no body: send a JSON object"
        if isinstance(problem.get("input"), (bytes, bytearray)):
            # Bytes: FastAPI read no JSON, the body's Content-Type is not JSON's (or there is none).
            return f"the request body is read as JSON only with Content-Type: {JSON_TYPE}"
    path = _field_path(where, location[:1])
    if kind == "missing":
        return f"{path} is required"
    if kind in ("model_attributes_type", "model_type", "dict_type", "mapping_type"):
        return f"{path} should be a JSON object"
    message = str(problem.get("msg") or "is not valid")
    # pydantic's sentences name the value by its kind ("Input should be a valid string", "String
    # should have at most 64 characters"): the path takes its place.
    subject, _, rest = message.partition(" ")
    if subject in _PYDANTIC_SUBJECTS and rest.startswith("should "):
        return f"{path} {rest}"
    return f"{path}: {message}"


def _field_path(parts: tuple, place: tuple) -> str:
    """``authData[0].id``; ``the request body`` for the body itself; a query parameter or a
    header named as such."""
    shown = ""
    for part in parts:
        if isinstance(part, int):
            shown += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_NAME.fullmatch(part):
            shown += f".{part}" if shown else part
        else:
            text = str(part)
            excerpt = text[:MAX_KEY_EXCERPT] + ("..." if len(text) > MAX_KEY_EXCERPT else "")
            shown += f"[{json.dumps(excerpt)}]"
    if not shown:
        return "the request body"
    if place and place[0] in _PLACES:
        return f"the {_PLACES[place[0]]} {shown}"
    return shown


def _position(text: object, offset: int) -> str:
    """Where ``offset`` of ``text`` is, as an editor shows it (line and column from 1)."""
    if not isinstance(text, str) or not 0 <= offset <= len(text):
        return f"character {offset + 1}"
    line = text.count("\n", 0, offset) + 1
    column = offset - text.rfind("\n", 0, offset)  # rfind: -1 on the first line
    return f"line {line}, column {column}"


async def _on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    # FastAPI answers 422 with its own shape; CSC speaks of invalid_request and 400.
    found = error.errors()
    problems = [validation_problem(problem, error.body) for problem in found[:MAX_VALIDATION_PROBLEMS]]
    if len(found) > MAX_VALIDATION_PROBLEMS:
        problems.append(f"and {len(found) - MAX_VALIDATION_PROBLEMS} more")
    return error_response(400, "invalid_request", "; ".join(problems) or "the request is not valid",
                          errors.InvalidArgument)


async def _on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    if isinstance(error.__cause__, MemoryError):
        # FastAPI answers any failure to read or parse a body "400 There was an error parsing
        # the body", the worker's memory bound reached included: that is no fault of the caller's.
        return await _on_memory_error(request, error.__cause__)
    code = {401: "invalid_token", 403: "access_denied", 404: "invalid_request",
            405: "invalid_request"}.get(error.status_code, "invalid_request" if error.status_code < 500 else "server_error")
    description = error.detail if isinstance(error.detail, str) else "the request is not valid"
    # A 400 of the framework is a body it could not read (not UTF-8, ...): the caller's input, as
    # the validation errors are. A path or method that does not exist is no refusal of a request
    # the API knows: it carries no reason, as an unknown gRPC method counts none.
    refused_with = errors.InvalidArgument if error.status_code == 400 else None
    return error_response(error.status_code, code, description, refused_with,
                          headers=getattr(error, "headers", None))


async def _on_unexpected(request: Request, error: Exception) -> JSONResponse:
    _faults_of(request).record("CSC request %s failed unexpectedly", request.url.path,
                               with_traceback=sys.exc_info()[1] is error)
    mark_logged(error)  # Starlette raises it again for the server, which need not log it twice
    # The reason CallMetrics counts it by (it answers outside the middleware, see app.py).
    return error_response(500, "server_error", GENERIC_SERVER_ERROR, UNEXPECTED)


def new_fault_log(clock: Clock) -> FaultLog:
    """A log of the CSC front's own faults: in full at most once a minute of ``clock``."""
    return FaultLog(log, clock)


def install_error_handlers(app: FastAPI, faults: FaultLog | None = None) -> None:
    """Register the mapping on ``app``: signserver errors, FastAPI's validation errors (400,
    never 422), HTTP errors (unknown paths, methods), the worker's memory bound reached (429)
    and anything unexpected (500). The server's
    faults are logged to ``faults`` (by default a new_fault_log of the system's clock)."""
    app.state.csc_fault_log = faults or new_fault_log(SystemClock())
    app.add_exception_handler(errors.SignServerError, _on_signserver_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(MemoryError, _on_memory_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
