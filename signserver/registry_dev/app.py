"""The reference registry's HTTP API (Starlette): the contract of docs/registry-contract.md, and
the development endpoints under ``/dev/`` (fault switches, the requests seen).

Every answer is JSON; an error is ``{"error": code, "detail": sentence}``. Nothing a client sends
is answered 500: bodies are bounded, parsed and checked field by field.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hmac
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from signserver.registry_dev.faces import MAX_PHOTO_BYTES, PhotoRejected, face_signature, similarity
from signserver.registry_dev.faults import Fault, FaultSwitch
from signserver.registry_dev.identities import Identity

log = logging.getLogger(__name__)

# A 10 MiB photo in base64 with the other fields, and some room.
MAX_BODY_BYTES = MAX_PHOTO_BYTES * 4 // 3 + 64 * 1024
MAX_FIELD_CHARS = 128
REQUEST_LOG_SIZE = 1000


@dataclass
class SeenRequest:
    """One request to a contract endpoint, as the development log keeps it: recorded when it
    arrives (so a caller that gave up waiting is counted too), its status set when answered."""

    endpoint: str  # "lookup" or "compare"
    request_id: str  # the caller's X-Request-Id ("" when absent)
    client_id: str  # the caller's X-Client-Id ("" when absent)
    status: int = 0  # what it was answered (0: not yet)

    def as_json(self) -> dict[str, object]:
        return {"endpoint": self.endpoint, "request_id": self.request_id, "client_id": self.client_id,
                "status": self.status}


@dataclass
class RegistryState:
    """What the app serves from: the identities, the API keys (none: no authentication), the
    fault switch and the log of the requests seen (the latest REQUEST_LOG_SIZE)."""

    identities: dict[tuple[str, str], Identity]
    api_keys: tuple[str, ...] = ()
    faults: FaultSwitch = field(default_factory=FaultSwitch)
    seen: collections.deque = field(default_factory=lambda: collections.deque(maxlen=REQUEST_LOG_SIZE))
    _seen_lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, request: SeenRequest) -> None:
        with self._seen_lock:
            self.seen.append(request)

    def requests(self, endpoint: str = "") -> list[SeenRequest]:
        """The requests seen (to ``endpoint`` only, when named), oldest first."""
        with self._seen_lock:
            return [r for r in self.seen if not endpoint or r.endpoint == endpoint]

    def forget_requests(self) -> None:
        with self._seen_lock:
            self.seen.clear()


class Refusal(Exception):
    """An answer other than 200: ``status`` with the body {"error": code, "detail": detail}."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.code, "detail": self.detail}, self.status, headers=self.headers)


def registry_app(state: RegistryState) -> Starlette:
    """The ASGI app serving ``state``."""

    async def lookup(request: Request) -> Response:
        return await _contract_call(state, request, "lookup", _lookup)

    async def compare(request: Request) -> Response:
        return await _contract_call(state, request, "compare", _compare)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok", "identities": len(state.identities)})

    async def faults(request: Request) -> Response:
        try:
            _authenticate(state, request)
            if request.method == "DELETE":
                state.faults.clear()
            elif request.method == "POST":
                body = await _json_body(request)
                try:
                    state.faults.set(Fault(status=_integer(body, "status", 0),
                                           delay_seconds=float(_number(body, "delay_seconds", 0.0)),
                                           times=_integer(body, "times", None)))
                except ValueError as exc:
                    raise Refusal(400, "bad_request", str(exc)) from None
        except Refusal as refusal:
            return refusal.response()
        return JSONResponse(state.faults.current().as_json())

    async def requests(request: Request) -> Response:
        try:
            _authenticate(state, request)
        except Refusal as refusal:
            return refusal.response()
        if request.method == "DELETE":
            state.forget_requests()
        return JSONResponse({"requests": [r.as_json() for r in state.requests()]})

    async def http_error(_: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        code = {404: "no_such_endpoint", 405: "method_not_allowed"}.get(status, "bad_request")
        return JSONResponse({"error": code, "detail": str(getattr(exc, "detail", ""))}, status)

    return Starlette(
        routes=[
            Route("/v1/identities/lookup", lookup, methods=["POST"]),
            Route("/v1/faces/compare", compare, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/dev/faults", faults, methods=["GET", "POST", "DELETE"]),
            Route("/dev/requests", requests, methods=["GET", "DELETE"]),
        ],
        exception_handlers={HTTPException: http_error},
    )


async def _contract_call(state: RegistryState, request: Request, endpoint: str, handler) -> Response:
    """Authenticate, apply the fault in force, run ``handler(state, body)`` and log the answer."""
    seen = SeenRequest(endpoint, request.headers.get("x-request-id", "")[:MAX_FIELD_CHARS],
                       request.headers.get("x-client-id", "")[:MAX_FIELD_CHARS])
    state.record(seen)
    try:
        _authenticate(state, request)
        fault = state.faults.take()
        if fault.delay_seconds:
            await asyncio.sleep(fault.delay_seconds)
        if fault.status:
            raise Refusal(fault.status, "unavailable" if fault.status >= 500 else "fault",
                          "a fault switched on for tests", {"Retry-After": "1"} if fault.status in (429, 503) else {})
        body = await _json_body(request)
        response = await handler(state, body)
    except Refusal as refusal:
        response = refusal.response()
    seen.status = response.status_code
    return response


async def _lookup(state: RegistryState, body: dict[str, Any]) -> Response:
    # No lookup without the holder's consent: checked before the identity is even looked for.
    consent = body.get("consent_reference")
    if not isinstance(consent, str) or not consent.strip() or len(consent) > MAX_FIELD_CHARS:
        raise Refusal(400, "consent_required",
                      f"consent_reference (at most {MAX_FIELD_CHARS} characters) is required: the holder's consent")
    return JSONResponse(_identity(state, body).as_json())


async def _compare(state: RegistryState, body: dict[str, Any]) -> Response:
    media_type = _text(body, "media_type")
    encoded = body.get("photo")
    if not isinstance(encoded, str):
        raise Refusal(400, "bad_request", "photo must be a base64 string")
    try:
        photo = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise Refusal(400, "bad_request", "photo is not valid base64") from None
    identity = _identity(state, body)
    try:
        # Decoding a photo is CPU work: off the event loop.
        face = await run_in_threadpool(face_signature, photo, media_type)
    except PhotoRejected as exc:
        raise Refusal(422, "photo_refused", str(exc)) from None
    return JSONResponse({"score": similarity(identity.face, face)})


def _authenticate(state: RegistryState, request: Request) -> None:
    """Raises: Refusal: (401) API keys are configured and the request carries none of them."""
    if not state.api_keys:
        return
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    presented = presented.strip().encode()
    matches = [hmac.compare_digest(presented, key.encode()) for key in state.api_keys]
    if scheme.lower() != "bearer" or not any(matches):
        raise Refusal(401, "unauthorized", "a valid API key is required (Authorization: Bearer ...)",
                      {"WWW-Authenticate": 'Bearer realm="identity-registry"'})


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, read up to MAX_BODY_BYTES.

    Raises: Refusal: (413) the body is larger; (400) it is not a JSON object.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise Refusal(413, "too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Refusal(413, "too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise Refusal(400, "bad_request", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise Refusal(400, "bad_request", "the body is not a JSON object")
    return body


def _identity(state: RegistryState, body: dict[str, Any]) -> Identity:
    """Raises: Refusal: (400) id_type or id_number missing; (404) no such identity."""
    key = (_text(body, "id_type"), _text(body, "id_number"))
    identity = state.identities.get(key)
    if identity is None:
        raise Refusal(404, "not_found", "no identity document of that type and number")
    return identity


def _text(body: dict[str, Any], name: str) -> str:
    """Raises: Refusal: (400) the field is absent, empty, too long or not a string."""
    value = body.get(name, "")
    if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS or not value.strip():
        raise Refusal(400, "bad_request", f"{name} must be a non-empty string of at most {MAX_FIELD_CHARS} characters")
    return value.strip()


def _integer(body: dict[str, Any], name: str, default):
    value = body.get(name, default)
    if value is not default and (not isinstance(value, int) or isinstance(value, bool)):
        raise Refusal(400, "bad_request", f"{name} must be an integer")
    return value


def _number(body: dict[str, Any], name: str, default: float) -> float:
    value = body.get(name, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise Refusal(400, "bad_request", f"{name} must be a number")
    return value
