"""What the CA's endpoints take and give, apart from any HTTP transport: a request already framed
and a response not yet rendered, so the endpoints move unchanged to another server stack."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus


@dataclass(frozen=True)
class Request:
    method: str  # upper case, as sent
    path: str  # the target's path, still percent-encoded
    body: bytes
    client: str  # the peer's IP address


@dataclass(frozen=True)
class Response:
    status: HTTPStatus
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def error_response(status: HTTPStatus, *headers: tuple[str, str]) -> Response:
    """A short plain-text answer that names only the status (never the request's content)."""
    return Response(status, f"{status.value} {status.phrase}\n".encode("ascii"), headers=headers)
