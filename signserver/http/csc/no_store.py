"""No cache may keep an answer that carries a bearer token or a SAD (RFC 6749, section 5.1):
``Cache-Control: no-store`` and ``Pragma: no-cache`` on every answer of the paths that hand one
out, their errors included."""

from __future__ import annotations

# Paths relative to the app's root, for both API versions.
SECRET_BEARING_PATHS = frozenset({
    "/oauth2/token",
    *(f"/csc/{version}/{method}" for version in ("v1", "v2")
      for method in ("auth/login", "credentials/authorize", "credentials/extendTransaction")),
})
_HEADERS = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]


class NoStore:
    """ASGI middleware: a plain wrapper of ``send`` (Starlette's BaseHTTPMiddleware would cost
    every request a task and a stream), acting on SECRET_BEARING_PATHS only."""

    def __init__(self, app, paths: frozenset[str] = SECRET_BEARING_PATHS):
        self.app = app
        self.paths = paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            return await self.app(scope, receive, send)

        async def send_no_store(message):
            if message["type"] == "http.response.start":
                kept = [(name, value) for name, value in message.get("headers", ())
                        if name.lower() not in (b"cache-control", b"pragma")]
                message = {**message, "headers": kept + _HEADERS}
            await send(message)

        await self.app(scope, receive, send_no_store)
