"""CaHttpServer: the CA's endpoints (see :mod:`signserver.http.endpoints`) over HTTP/1.1.

One event loop in one thread holds every connection, so an idle or half-sent connection costs a
descriptor and a little memory, never a thread. A request goes to a pool of threads only once it
has fully arrived: CRLs, certificates and OCSP on one pool, time-stamps on their own. The limits
(``[http]`` in the configuration):

- ``max_connections``: beyond it a new connection is answered 503 at once and closed; so is one
  that arrives while fewer descriptors than the process's reserve are free (the HSM's token files
  and the database need them more).
- ``request_timeout_seconds``: the time a client has to send a whole request (and to take its
  answer); a half-sent request is answered 408 and closed, a quiet kept-alive one closed.
- ``threads`` / ``tsa_threads``: the two pools; when their queues are full, 503 with Retry-After.
- ``tsa_rate_per_second`` / ``tsa_burst``: time-stamps per client address; beyond, 429.

Malformed requests (request line, header fields, Content-Length) are answered 400 (411, 413, 431,
505 where those say more) and closed. Request bodies are never logged. A fault of the server's own
while answering is answered 500 and closed, and logged at most once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import threading
from http import HTTPStatus

from signserver.config import HttpConfig, split_address
from signserver.descriptors import DescriptorReserve
from signserver.errors import ServerBusy
from signserver.http.endpoints import MAX_REQUEST_BODY, CaEndpoints, Lane
from signserver.http.fault_log import FaultLog
from signserver.http.framing import (MAX_HEAD_BYTES, MalformedHttpRequest, RequestHead, body_length, head_end,
                                     parse_head, render_response)
from signserver.http.messages import Request, Response, error_response
from signserver.http.pools import BoundedPool
from signserver.http.rate_limit import TokenBuckets
from signserver.service import SignService

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
WAITING_PER_THREAD = 32  # requests queued per pool thread before 503: a second or so of work
_BUSY = error_response(HTTPStatus.SERVICE_UNAVAILABLE, ("Retry-After", "1"))
_FAULT = error_response(HTTPStatus.INTERNAL_SERVER_ERROR)


class _ClientGone(Exception):
    """The client closed its side before its request was complete."""


class CaHttpServer:
    """The HTTP endpoints in a background thread; ``settings`` default to the service's ``[http]``,
    ``reserve`` to the descriptors kept free for the HSM and the database.

    Raises (constructor): OSError: the address cannot be bound.
    """

    def __init__(self, service: SignService, listen: str, settings: HttpConfig | None = None,
                 reserve: DescriptorReserve | None = None):
        self._settings = settings or service.config.http
        self._clock = service.clock
        self._reserve = reserve or DescriptorReserve()
        self._faults = FaultLog(log, service.clock)
        host, port = split_address(listen)
        self._socket = _listening_socket(host, port)
        self._endpoints = CaEndpoints(service, TokenBuckets(
            self._settings.tsa_rate_per_second, self._settings.tsa_burst, service.clock))
        threads, tsa_threads = self._settings.threads, self._settings.tsa_threads
        self._pools = {Lane.GENERAL: BoundedPool("http", threads, threads * WAITING_PER_THREAD),
                       Lane.TIME_STAMPING: BoundedPool("http-tsa", tsa_threads, tsa_threads * WAITING_PER_THREAD)}
        self._max_connections = _connection_bound(self._settings.max_connections)
        self._open = 0  # connections being served; only touched from the loop's thread
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1]

    @property
    def open_connections(self) -> int:
        """Connections being served now (idle and half-sent ones included)."""
        return self._open

    def start(self) -> None:
        """Serve in a background thread. Raises: OSError: the event loop could not take the socket."""
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure
        log.info("serving CRLs, OCSP, time-stamps and CA certificates on http://%s:%d",
                 *self._socket.getsockname()[:2])

    def stop(self) -> None:
        """Close every connection, let the HSM calls under way finish, and stop."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        else:
            self._socket.close()
            self._loop.close()
        for pool in self._pools.values():
            pool.shutdown()

    # --- the event loop's thread ------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            server = self._loop.run_until_complete(asyncio.start_server(self._connection, sock=self._socket))
        except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.run_until_complete(asyncio.sleep(0))  # let the closed transports let go of their sockets
            self._loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= self._max_connections or not self._reserve.available():
            writer.write(render_response(_BUSY, self._clock.now(), keep_alive=False))
            _close(writer)
            return
        self._open += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, TimeoutError, _ClientGone):
            pass
        except Exception:  # noqa: BLE001 - a bug costs this connection, never the server
            self._faults.record("HTTP connection failed unexpectedly", with_traceback=True)
        finally:
            self._open -= 1
            _close(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer the connection's requests in turn until it closes, breaks a rule or times out.

        Raises: ConnectionError, TimeoutError (sending), _ClientGone.
        """
        peer = writer.get_extra_info("peername")
        client = peer[0] if isinstance(peer, tuple) else "unknown"
        timeout = self._settings.request_timeout_seconds
        buffer = bytearray()
        while True:
            try:
                async with asyncio.timeout(timeout):
                    received = await _receive(reader, buffer)
            except TimeoutError:
                if buffer:  # a request was begun: say why it is dropped
                    await self._send(writer, error_response(HTTPStatus.REQUEST_TIMEOUT), keep_alive=False)
                return
            except MalformedHttpRequest as exc:
                log.debug("HTTP request from %s refused (%d): %s", client, exc.status.value, exc)
                await self._send(writer, error_response(exc.status), keep_alive=False)
                return
            except (ConnectionError, _ClientGone):
                raise
            except Exception:  # noqa: BLE001 - a bug in reading a request still gets an answer
                await self._fail(writer, "HTTP request from %s could not be read", client)
                return
            if received is None:
                return
            head, body = received
            request = Request(head.method, head.path, body, client)
            try:
                response = await self._answer(request)
            except Exception:  # noqa: BLE001 - a bug in answering one request still gets an answer
                await self._fail(writer, "HTTP request from %s failed unexpectedly", client)
                return
            log.debug("%s %s %s -> %d", client, head.method, head.path, response.status.value)
            await self._send(writer, response, head.keep_alive, with_body=head.method != "HEAD")
            if not head.keep_alive:
                return

    async def _answer(self, request: Request) -> Response:
        routed = self._endpoints.route(request)
        if isinstance(routed, Response):
            return routed
        try:
            return await self._pools[routed.lane].run(routed.run)
        except ServerBusy:
            return _BUSY

    async def _fail(self, writer: asyncio.StreamWriter, message: str, *args: object) -> None:
        """Log the exception being handled (rarely: a client can repeat it) and answer 500.

        Raises: ConnectionError, TimeoutError (sending).
        """
        self._faults.record(message, *args, with_traceback=True)
        await self._send(writer, _FAULT, keep_alive=False)

    async def _send(self, writer: asyncio.StreamWriter, response: Response, keep_alive: bool,
                    with_body: bool = True) -> None:
        """Raises: ConnectionError; TimeoutError: the client does not take the answer in time."""
        writer.write(render_response(response, self._clock.now(), keep_alive, with_body))
        async with asyncio.timeout(self._settings.request_timeout_seconds):
            await writer.drain()


async def _receive(reader: asyncio.StreamReader, buffer: bytearray) -> tuple[RequestHead, bytes] | None:
    """The next request's head and body, taken from ``buffer`` and then the connection (what
    follows the request stays in ``buffer``); None when the connection ends between requests.

    Raises: MalformedHttpRequest; _ClientGone: the connection ended in the middle of a request.
    """
    while True:
        del buffer[:len(buffer) - len(buffer.lstrip(b"\r\n"))]  # empty lines before a request are allowed
        end = head_end(buffer)
        if end is not None or len(buffer) > MAX_HEAD_BYTES:
            break
        chunk = await reader.read(READ_SIZE)
        if not chunk:
            if buffer:
                raise _ClientGone()
            return None
        buffer += chunk
    if end is None or end > MAX_HEAD_BYTES + 4:
        raise MalformedHttpRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "the request head is too large")
    head = parse_head(bytes(buffer[:end]))
    length = body_length(head, MAX_REQUEST_BODY)
    # The head stays in the buffer until the body is in: a request cut short by the timeout is
    # told so (408) whether it stopped in its head or its body.
    while len(buffer) < end + length:
        chunk = await reader.read(READ_SIZE)
        if not chunk:
            raise _ClientGone()
        buffer += chunk
    body = bytes(buffer[end:end + length])
    del buffer[:end + length]
    return head, body


def _close(writer: asyncio.StreamWriter) -> None:
    # An answer not yet taken by the client would keep the connection open until it reads.
    if writer.transport.get_write_buffer_size():
        writer.transport.abort()
    else:
        writer.close()


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # every worker process serves the port
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _connection_bound(configured: int) -> int:
    """``max_connections``, but never more than half the descriptors the process may open: the
    rest stay for the HSM's token files, the database and the gRPC server."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft // 2))
