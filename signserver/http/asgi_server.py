"""Serving an ASGI app on uvicorn in the worker's own event loop, with the limits uvicorn lacks.

Every HTTP front of a worker (the CA's endpoints, the CSC API) is served by :class:`AsgiServer`:
uvicorn's HTTP/1.1 protocol (h11) on a socket that every worker process binds (SO_REUSEPORT), with
the process's signals left to the worker. :class:`LimitedHttpProtocol` adds, per connection:

- a request timeout: from the moment a connection opens, and again whenever an answer has been
  sent on a kept-alive one, the client has ``request_timeout_seconds`` to send a whole request,
  head and body. A request begun but not finished by then is answered 408 and the connection
  closed; a connection on which nothing was sent is closed without a word. uvicorn has no such
  bound: a client sending half a request (slowloris) held its connection for good. A client also
  has that long to take an answer the server cannot hand to the kernel, and to take the last one
  of a connection being closed, before the connection is cut.
- a bound on connections, and the descriptor reserve: a connection beyond ``max_connections``,
  or one arriving while fewer descriptors than the process's reserve are free, is answered 503
  (Retry-After) at once and closed; so is one beyond ``per_address`` open from the same client
  address (an IPv6 /64), where a front sets it, so that one client cannot take every connection.
- the client certificate TLS verified on the connection, handed to each request of it in
  ``request.state.client_certificate_der`` (ASGI has no standard place for it).
- what h11 refuses (a malformed request line, header field or Content-Length) is answered with
  the status h11 names (400, or 431 for a head beyond MAX_HEAD_BYTES) and closed.

:class:`RequestHeadCheck` refuses what h11 lets through but no front serves: an HTTP version other
than 1.x (505), a head of more than MAX_HEAD_BYTES or MAX_HEADERS fields (431), a target that is
neither a path nor an absolute http(s) URL (400); an absolute URL is served by its path (RFC 9112
3.2.2). Those answers close the connection too.

:class:`~signserver.asgi_faults.FaultAfterAnswer` (the RA's server uses it too) keeps a
connection whose app failed after its answer went out whole (Starlette answers a fault with its
500, then raises it again for the server to log): uvicorn closed such a connection without its
answer saying ``Connection: close`` (RFC 9112 9.6), and a client reusing it (keep-alive, as httpx
and browsers do) met a reset on its next request. The fault is logged through the server's log, as
uvicorn's are; a fault that cuts an answer short still closes the connection.

A TLS handshake is bounded by asyncio's own timeout (60 s); the request timeout starts once it is
done.

uvicorn's own log lines are toned down for a server anyone may reach: what a client can cause (a
malformed request) is logged at DEBUG, a fault of an app at most once a minute (FaultLog).
The client's address is the connection's peer: X-Forwarded-For and the like are not believed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import resource
import socket
import ssl
import urllib.parse
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Iterator

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from signserver.clock import Clock
from signserver.addresses import split_address
from signserver.asgi_faults import FaultAfterAnswer
from signserver.descriptors import DescriptorReserve
from signserver.errors import ConfigurationError
from signserver.http.rate_limit import client_key
from signserver.monitoring.fault_log import FaultLog

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024  # request line and header fields
MAX_HEADERS = 64
# Time to let requests in flight finish on a stop.
SHUTDOWN_GRACE_SECONDS = 10


@dataclass(frozen=True)
class ConnectionLimits:
    """What one front of a worker takes: ``max_connections`` open at once (idle ones included),
    ``request_timeout_seconds`` to send a whole request, new connections only while ``reserve``
    says enough descriptors are free, and, unless ``per_address`` is None, at most that many open
    from one client address (an IPv6 /64), so that one client cannot hold every connection."""

    request_timeout_seconds: float
    max_connections: int
    reserve: DescriptorReserve
    per_address: int | None = None
    # The connections open from each client address: the server's protocols share it, on its loop.
    open_by_address: collections.Counter = field(default_factory=collections.Counter, repr=False, compare=False)


@dataclass(frozen=True)
class TlsOptions:
    """The server's certificate and key, and the client CA: ``client_certificates`` is
    ssl.CERT_REQUIRED, ssl.CERT_OPTIONAL or ssl.CERT_NONE."""

    cert_file: str
    key_file: str
    client_ca_file: str | None
    client_certificates: ssl.VerifyMode


def listening_socket(address: str, setting: str) -> socket.socket:
    """A socket bound to ``address`` that every worker process may bind too.

    Raises: ConfigurationError: (naming ``setting``) the address is malformed or cannot be bound.
    """
    try:
        host, port = split_address(address)
    except ValueError as exc:
        raise ConfigurationError(setting, str(exc)) from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on connections whose socket says
    # so, and without it every answer waited 40 ms for the client's delayed ACK (HTTP's head and
    # body leave in two writes).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # every worker process serves the port
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(setting, f"cannot bind {address}: {exc.strerror or exc}") from None
    return sock


def connection_bound(configured: int) -> int:
    """``configured``, but never more than half the descriptors the process may open: the rest
    stay for the HSM's token files, the database and the gRPC server."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft // 2))


class ServerLog:
    """Stands in for the logger uvicorn's protocol writes to ("uvicorn.error"). What a client can
    cause, and repeat at will (a malformed request, an upgrade nobody serves), is logged at
    DEBUG; an error (an app's fault, with its traceback) at most once a minute."""

    level = logging.DEBUG  # uvicorn writes its per-connection TRACE lines only at a lower level

    def __init__(self, logger: logging.Logger, clock: Clock):
        self._logger = logger
        self._faults = FaultLog(logger, clock)

    def log(self, level: int, message: str, *args: object, exc_info: Any = None, **_: Any) -> None:
        if level >= logging.ERROR:
            self._faults.record(message.strip(), *args, with_traceback=bool(exc_info))
        else:
            self._logger.debug(message, *args)

    def debug(self, message: str, *args: object, **kwargs: Any) -> None:
        self.log(logging.DEBUG, message, *args, **kwargs)

    info = warning = debug

    def error(self, message: str, *args: object, **kwargs: Any) -> None:
        self.log(logging.ERROR, message, *args, **kwargs)

    exception = error


class _RefusalKeepingConnection(h11.Connection):
    """h11's connection, remembering the status h11 suggests for the request it refused last."""

    refusal_status = HTTPStatus.BAD_REQUEST

    def next_event(self):  # type: ignore[override]
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            try:
                self.refusal_status = HTTPStatus(exc.error_status_hint)
            except ValueError:
                self.refusal_status = HTTPStatus.BAD_REQUEST
            raise


def _client_address(transport: asyncio.BaseTransport) -> str | None:
    """The key the connection's peer is counted under (see rate_limit.client_key); None when the
    transport has no IP peer (a Unix socket)."""
    peer = transport.get_extra_info("peername")
    if not isinstance(peer, tuple) or not peer:
        return None
    return client_key(str(peer[0]))


class LimitedHttpProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with the request timeout, the connection bound, the
    descriptor reserve and the client certificate hand-over (see the module's docstring).
    uvicorn makes one per connection; ``limits`` and ``server_log`` are the server's."""

    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, limits: ConnectionLimits, server_log: ServerLog):
        super().__init__(config, server_state, app_state, _loop)
        self.conn = _RefusalKeepingConnection(h11.SERVER, config.h11_max_incomplete_event_size or MAX_HEAD_BYTES)
        self.logger = server_log  # type: ignore[assignment]
        self._limits = limits
        self._request_deadline: asyncio.TimerHandle | None = None  # to receive a whole request
        self._send_deadline: asyncio.TimerHandle | None = None  # for the client to take what was written
        self._counted_as: str | None = None  # the client address this connection is counted under

    # --- the connection -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        limits = self._limits
        address = _client_address(transport) if limits.per_address is not None else None
        if (len(self.connections) >= limits.max_connections or not limits.reserve.available()
                or (address is not None and limits.open_by_address[address] >= limits.per_address)):
            self.transport = transport  # uvicorn's connection_lost closes it
            self._answer_and_close(HTTPStatus.SERVICE_UNAVAILABLE, (b"retry-after", b"1"))
            return
        if address is not None:
            limits.open_by_address[address] += 1
            self._counted_as = address
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            # Per connection: each request's state starts as a copy of this.
            self.app_state = {**self.app_state, "client_certificate_der": der}
        self._expect_request()

    def connection_lost(self, exc: Exception | None) -> None:
        for deadline in (self._request_deadline, self._send_deadline):
            if deadline is not None:
                deadline.cancel()
        self._request_deadline = self._send_deadline = None
        if self._counted_as is not None:
            counts = self._limits.open_by_address
            counts[self._counted_as] -= 1
            if counts[self._counted_as] <= 0:
                del counts[self._counted_as]
            self._counted_as = None
        super().connection_lost(exc)

    # --- the request timeout ------------------------------------------------------------

    def _expect_request(self) -> None:
        if self._request_deadline is not None:
            self._request_deadline.cancel()
        self._request_deadline = self.loop.call_later(self._limits.request_timeout_seconds, self._request_timed_out)

    def handle_events(self) -> None:
        super().handle_events()
        # The whole request is in: the time it takes to answer is not the client's.
        if self._request_deadline is not None and self.conn.their_state in (h11.DONE, h11.MUST_CLOSE):
            self._request_deadline.cancel()
            self._request_deadline = None

    def on_response_complete(self) -> None:
        if self.transport.is_closing():
            self._cut_off_later()  # the last answer, written: the client has the timeout to take it
        else:
            # Before uvicorn starts on a request already received (pipelined), which ends the
            # wait again at once when that request is whole.
            self._expect_request()
        super().on_response_complete()

    def _request_timed_out(self) -> None:
        self._request_deadline = None
        if self.transport.is_closing():
            return
        begun = self.conn.their_state is not h11.IDLE or bool(self.conn.trailing_data[0])
        if self.cycle is not None and not self.cycle.response_complete:
            # The app waits for the rest of the body: it hears the client is gone, and anything
            # it still sends is dropped.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if begun and self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._answer_and_close(HTTPStatus.REQUEST_TIMEOUT)
        else:  # a quiet kept-alive connection, or an answer already given: nothing to say
            self._close()

    # --- the time to take answers -------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_deadline is None:
            self._send_deadline = self.loop.call_later(self._limits.request_timeout_seconds, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_deadline is not None and not self.transport.is_closing():
            self._send_deadline.cancel()
            self._send_deadline = None

    def _cut_off_later(self) -> None:
        """Abort the connection unless it has closed within the timeout (a closing transport
        waits until the client has taken everything written)."""
        if self._send_deadline is None:
            self._send_deadline = self.loop.call_later(self._limits.request_timeout_seconds, self.transport.abort)

    def _close(self) -> None:
        self.transport.close()
        self._cut_off_later()

    # --- answers of the protocol's own ---------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """What h11 refused, answered with the status h11 names for it, and closed."""
        self._answer_and_close(self.conn.refusal_status)

    def _answer_and_close(self, status: HTTPStatus, *headers: tuple[bytes, bytes]) -> None:
        body = f"{status.value} {status.phrase}\n".encode("ascii")
        head = [*self.server_state.default_headers, (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode("ascii")), (b"connection", b"close"), *headers]
        try:
            data = (self.conn.send(h11.Response(status_code=status.value, headers=head, reason=status.phrase.encode()))
                    + self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:  # an answer was begun already: nothing more may be said
            data = b""
        if data:
            self.transport.write(data)
        self._close()


class RequestHeadCheck:
    """ASGI middleware: refuses what h11 lets through but no front serves (see the module's
    docstring), and gives the app the path of a target sent as an absolute URL."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        checked = _checked_head(scope)
        if isinstance(checked, HTTPStatus):
            await send_plain_answer(send, checked, close=True)
            return
        await self.app(checked, receive, send)


def _checked_head(scope: dict) -> dict | HTTPStatus:
    """``scope``, with the path of an absolute-form target; or the status to refuse it with."""
    if scope.get("http_version") not in ("1.0", "1.1"):
        return HTTPStatus.HTTP_VERSION_NOT_SUPPORTED
    headers = scope["headers"]
    size = len(scope["raw_path"]) + len(scope["query_string"]) + sum(len(name) + len(value) + 4
                                                                    for name, value in headers)
    if len(headers) > MAX_HEADERS or size > MAX_HEAD_BYTES:
        return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    raw_path: bytes = scope["raw_path"]
    if raw_path.startswith(b"/"):
        return scope
    target = raw_path.decode("ascii", "replace")
    if not target.lower().startswith(("http://", "https://")):
        return HTTPStatus.BAD_REQUEST
    try:
        parts = urllib.parse.urlsplit(target)
        parts.port  # noqa: B018 - read to validate: urlsplit itself accepts any text after the colon
    except ValueError:
        return HTTPStatus.BAD_REQUEST
    path = parts.path or "/"
    return {**scope, "raw_path": path.encode("ascii"), "path": urllib.parse.unquote(path)}


async def send_plain_answer(send: Any, status: HTTPStatus, *headers: tuple[bytes, bytes], close: bool = False) -> None:
    """A short plain-text answer that names only the status (never the request's content);
    ``close``: the connection closes after it."""
    body = f"{status.value} {status.phrase}\n".encode("ascii")
    head = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode("ascii")),
            *headers]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status.value, "headers": head})
    await send({"type": "http.response.body", "body": body})


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signals to the worker, which stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AsgiServer:
    """One ASGI app served on one address, on the running event loop (:meth:`start` and
    :meth:`stop` are awaited on it). ``setting`` names the address's configuration key in
    errors; ``tls`` None serves plain HTTP."""

    def __init__(self, app: Any, address: str, setting: str, limits: ConnectionLimits, clock: Clock,
                 tls: TlsOptions | None = None, logger: logging.Logger = log):
        self._app = app
        self._address = address
        self._setting = setting
        self._limits = limits
        self._clock = clock
        self._tls = tls
        self._logger = logger
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task | None = None
        self.port: int | None = None

    @property
    def open_connections(self) -> int:
        """Connections being served now (idle and half-sent ones included)."""
        return len(self._server.server_state.connections) if self._server is not None else 0

    async def start(self) -> int:
        """Bind and serve; returns the bound port (useful with port 0).

        Raises: ConfigurationError: the address cannot be bound (naming ``setting``), or the TLS
        material is unusable (naming tls.cert_file).
        """
        sock = listening_socket(self._address, self._setting)
        self.port = sock.getsockname()[1]
        server_log = ServerLog(self._logger, self._clock)
        protocol = functools.partial(LimitedHttpProtocol, limits=self._limits, server_log=server_log)
        tls = self._tls
        config = uvicorn.Config(
            RequestHeadCheck(FaultAfterAnswer(self._app, server_log)), http=protocol, ws="none", lifespan="off",
            log_config=None, access_log=False, proxy_headers=False, server_header=False,
            timeout_keep_alive=self._limits.request_timeout_seconds, timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            ssl_certfile=tls.cert_file if tls else None, ssl_keyfile=tls.key_file if tls else None,
            ssl_cert_reqs=tls.client_certificates if tls else ssl.CERT_NONE,
            ssl_ca_certs=tls.client_ca_file if tls else None)
        try:
            config.load()
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise ConfigurationError("tls.cert_file", f"{self._setting} cannot use the TLS material: {exc}") from None
        self._server = _EmbeddedServer(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # raises what stopped it
                raise ConfigurationError(self._setting, "the server stopped as it started")
            await asyncio.sleep(0.01)
        return self.port

    async def stop(self) -> None:
        """Stop accepting connections, close idle ones and let requests in flight finish
        (within SHUTDOWN_GRACE_SECONDS)."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
