"""HTTP/1.1 spoken on a bare socket, for tests of what a server does with one connection, and the
ASGI endpoints those tests serve."""

from __future__ import annotations

import socket

from starlette.requests import Request
from starlette.responses import PlainTextResponse


async def fine(request: Request) -> PlainTextResponse:
    """An endpoint that answers "fine"."""
    return PlainTextResponse("fine")


class CutShort:
    """An ASGI endpoint: an answer begun, then a fault before its end."""

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"100")]})
        await send({"type": "http.response.body", "body": b"begun", "more_body": True})
        raise RuntimeError("a fault half-way through an answer")


def read_answer(connection: socket.socket) -> bytes:
    """One whole answer (head and a Content-Length body), or what came before the connection ended."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
