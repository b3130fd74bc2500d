"""The CSC API under a worker's memory bound: a request that reaches it is refused with 429
MEMORY_EXHAUSTED, never answered as the caller's error nor dropped."""

from __future__ import annotations

import asyncio
import json


async def asgi_call(app, path: str, headers: dict[str, str], chunks: list[bytes | MemoryError]) -> tuple[int, dict]:
    """Call ``app`` as the server does, the body in ``chunks`` (a MemoryError: raised where that
    part of the body would be read). Returns the status and the JSON answer."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "https",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 443), "state": {}}
    parts = list(chunks)
    sent: list[dict] = []

    async def receive():
        if not parts:
            return {"type": "http.disconnect"}
        part = parts.pop(0)
        if isinstance(part, MemoryError):
            raise part
        return {"type": "http.request", "body": part, "more_body": bool(parts)}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body)


def test_a_memory_error_while_a_body_is_read_is_429_memory_exhausted(csc_server, access_token):
    from signserver.http.csc.app import create_csc_app

    app = create_csc_app(csc_server.context)
    headers = {"Authorization": f"Bearer {access_token}", "Content-Type": "application/json",
               "Content-Length": "40"}
    for path in ("/csc/v2/signatures/signDoc", "/csc/v2/credentials/list"):
        status, answer = asyncio.run(asgi_call(app, path, headers, [b'{"credentialID": ', MemoryError()]))
        assert (status, answer["error_reason"]) == (429, "MEMORY_EXHAUSTED"), answer
        assert answer["error"] == "too_many_requests"
