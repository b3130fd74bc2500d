"""What every response of the RA carries for the browser's protection, the RA's own request log
(no secret in it), and the check of a form's origin.

The headers: a Content-Security-Policy that allows only the RA's own scripts, styles and images
(so no inline script or style anywhere), no framing, no MIME sniffing, no Referer (a page's
address may carry a notice link's token), the camera for the RA's own pages only (the photo
step), and no caching of pages (they hold personal data); static files may be cached."""

from __future__ import annotations

import logging
import re
import time
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("signserver.ra.web.access")

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"permissions-policy", b"camera=(self)"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
STRICT_TRANSPORT = (b"strict-transport-security", b"max-age=31536000")
STATIC_PREFIX = "/static/"

# Paths that carry a secret: the notice e-mail's link (/notice/{renewal_id}/{token}). Everything
# after the renewal's id is masked, whatever follows the token (a slash, more segments) and
# however the slashes are doubled: a path the site does not serve is logged too.
_SECRET_PATHS = [re.compile(r"^(/+notice/+[^/]*/+)(?=.)(.*)$", re.IGNORECASE | re.DOTALL)]


class SecurityHeaders:
    """ASGI middleware: the headers above on every HTTP response (a page's own value kept when it
    sets one, e.g. a PDF's Cache-Control)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(STATIC_PREFIX)
        tls = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = list(HEADERS)
                if not static:
                    extra.append((b"cache-control", b"no-store"))
                if tls:
                    extra.append(STRICT_TRANSPORT)
                headers.extend((name, value) for name, value in extra if name not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def loggable_path(path: str) -> str:
    """``path`` with any secret it carries masked."""
    for pattern in _SECRET_PATHS:
        path = pattern.sub(lambda m: m.group(1) + "***", path)
    return path


class RequestLog:
    """ASGI middleware: one line per request (method, path with secrets masked, status, time);
    no query string, no header, no body. uvicorn's own access log is off."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, logged = [0], [False]

        def write() -> None:
            logged[0] = True
            log.info("%s %s %d %.1f ms", scope.get("method", ""), loggable_path(scope["path"]), status[0] or 500,
                     (time.perf_counter() - started) * 1000)

        async def send_noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                write()  # before the last part goes: the line is there when the client has the answer
            await send(message)

        try:
            await self.app(scope, receive, send_noting)
        finally:
            if not logged[0]:
                write()


def origin_of(url: str) -> str:
    """scheme://host[:port] of an absolute URL, lower case, default ports left out; "" for one
    that cannot be read."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a bracketed host that is no IPv6 address, a port that is no number
        return ""
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if not scheme or not host:
        return ""
    if ":" in host:
        host = f"[{host}]"
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_allowed(origin: str | None, own_origins: set[str]) -> bool:
    """Whether a request's Origin header allows it: absent, "null" (browsers send it with
    Referrer-Policy no-referrer; the CSRF token decides then), or one of the RA's own origins."""
    if origin is None or origin.strip() in ("", "null"):
        return True
    found = origin_of(origin.strip())
    return bool(found) and found in own_origins
