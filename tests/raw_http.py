"""HTTP/1.1 spoken on a bare socket, for tests of what a server does with one connection."""

from __future__ import annotations

import socket


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
