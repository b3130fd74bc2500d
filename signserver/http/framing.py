"""HTTP/1.1 framing (RFC 9112): the request head, the length of its body, the bytes of an answer.

Strict on purpose: what cannot be framed without guessing is answered with a 4xx status and the
connection closed, never left waiting and never dropped without an answer.
"""

from __future__ import annotations

import datetime
import email.utils
import re
import urllib.parse
from dataclasses import dataclass
from http import HTTPStatus

from signserver.errors import InvalidArgument
from signserver.http.messages import Response

MAX_HEAD_BYTES = 16 * 1024  # request line and headers
MAX_HEADERS = 64

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(r"\r?\n")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2
_VERSION = re.compile(r"HTTP/(\d)\.(\d)")
_TARGET = re.compile(r"[\x21-\x7e]+")  # visible ASCII, no spaces
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")  # no control characters but HTAB
_DIGITS = re.compile(r"[0-9]+")


class MalformedHttpRequest(InvalidArgument):
    """The bytes received do not frame a request the endpoints can answer; ``status`` is the
    4xx (or 505) status to answer with before closing the connection."""

    def __init__(self, status: HTTPStatus, reason: str):
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    version: tuple[int, int]
    headers: tuple[tuple[str, str], ...]  # names in lower case, in the order received
    path: str  # the target's path (origin form, or that of an absolute URL), still percent-encoded

    def values(self, name: str) -> list[str]:
        """Every value of the header ``name`` (lower case), comma-separated lists split."""
        return [part.strip() for key, value in self.headers if key == name for part in value.split(",")
                if part.strip()]

    @property
    def keep_alive(self) -> bool:
        """Whether the client expects the connection to stay open after the answer."""
        options = {value.lower() for value in self.values("connection")}
        if self.version >= (1, 1):
            return "close" not in options
        return "keep-alive" in options


def head_end(buffer: bytes | bytearray) -> int | None:
    """Where the head in ``buffer`` ends (just past its empty line), or None if it has not yet."""
    found = _HEAD_END.search(buffer)
    return found.end() if found else None


def parse_head(data: bytes) -> RequestHead:
    """Parse a request line and its header fields (``data`` ends with the empty line).

    Raises:
        MalformedHttpRequest: 400 for a malformed request line, header field or target, or an
            HTTP/1.1 request without exactly one Host; 431 for too many header fields; 505 for an
            HTTP version other than 1.x.
    """
    lines = _LINE_END.split(data.decode("latin-1"))
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise MalformedHttpRequest(HTTPStatus.BAD_REQUEST, "empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise MalformedHttpRequest(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version_text = parts
    version = _VERSION.fullmatch(version_text)
    if not version:
        raise MalformedHttpRequest(HTTPStatus.BAD_REQUEST, "malformed HTTP version")
    if version.group(1) != "1":
        raise MalformedHttpRequest(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.x is served")
    if not target.startswith("/") and not target.lower().startswith(("http://", "https://")):
        raise MalformedHttpRequest(HTTPStatus.BAD_REQUEST, "the target is neither a path nor an absolute URL")
    if len(lines) - 1 > MAX_HEADERS:
        raise MalformedHttpRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header fields")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        # No space before the colon (RFC 9112 5.1) and no folded lines (obs-fold, 5.2): both are
        # read differently by different servers, which is how requests get smuggled.
        if not colon or not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise MalformedHttpRequest(HTTPStatus.BAD_REQUEST, "malformed header field")
        headers.append((name.lower(), value.strip(" \t")))
    head = RequestHead(method, target, (1, int(version.group(2))), tuple(headers), target_path(target))
    if head.version >= (1, 1) and sum(1 for key, _ in headers if key == "host") != 1:
        raise MalformedHttpRequest(HTTPStatus.BAD_REQUEST, "an HTTP/1.1 request has exactly one Host field")
    return head


def target_path(target: str) -> str:
    """The path of a request target (origin form, or that of an absolute URL), still percent-encoded.

    Raises:
        MalformedHttpRequest: 400 for an absolute URL that does not parse (an unclosed or invalid
            bracketed host, a port that is not a number).
    """
    if target.startswith("/"):  # not urlsplit: it would read "//x/y" as a host and a path
        return target.split("?", 1)[0]
    try:
        parts = urllib.parse.urlsplit(target)
        parts.port  # noqa: B018 - read to validate: urlsplit itself accepts any text after the colon
    except ValueError:
        raise MalformedHttpRequest(HTTPStatus.BAD_REQUEST, "the target is not a valid URL") from None
    return parts.path or "/"


def body_length(head: RequestHead, limit: int) -> int:
    """How many bytes of body follow ``head``.

    Raises:
        MalformedHttpRequest: 400 for a Content-Length that is not a number or that disagrees with
            another, or one sent with Transfer-Encoding; 411 for a POST without Content-Length and
            for a chunked body (the endpoints take only bodies of a declared length); 413 for a
            body longer than ``limit``.
    """
    lengths = head.values("content-length")
    if any(key == "transfer-encoding" for key, _ in head.headers):
        if lengths:
            raise MalformedHttpRequest(HTTPStatus.BAD_REQUEST, "both Content-Length and Transfer-Encoding")
        raise MalformedHttpRequest(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
    if not lengths:
        if head.method == "POST":
            raise MalformedHttpRequest(HTTPStatus.LENGTH_REQUIRED, "a POST needs a Content-Length")
        return 0
    if not all(_DIGITS.fullmatch(value) for value in lengths):
        raise MalformedHttpRequest(HTTPStatus.BAD_REQUEST, "Content-Length is not a number")
    if len({value.lstrip("0") for value in lengths}) != 1:
        raise MalformedHttpRequest(HTTPStatus.BAD_REQUEST, "conflicting Content-Length values")
    # Compared as text first: int() of thousands of digits is slow, and refused past 4,300.
    length = int(lengths[0]) if len(lengths[0].lstrip("0")) <= len(str(limit)) else limit + 1
    if length > limit:
        raise MalformedHttpRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"bodies are limited to {limit} bytes")
    return length


def render_response(response: Response, now: datetime.datetime, keep_alive: bool, with_body: bool = True) -> bytes:
    """The bytes of ``response`` on the wire (``with_body`` False: the answer to a HEAD)."""
    lines = [f"HTTP/1.1 {response.status.value} {response.status.phrase}",
             "Server: signserver",
             f"Date: {email.utils.format_datetime(now.astimezone(datetime.timezone.utc), usegmt=True)}",
             f"Content-Type: {response.content_type}",
             f"Content-Length: {len(response.body)}",
             f"Connection: {'keep-alive' if keep_alive else 'close'}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + response.body if with_body else head
