"""A fault of an app served by AsgiServer, over real HTTP on a free loopback port: once its 500 has
gone out whole, the connection serves the client's next request (an HTTP/1.1 client reuses it, as
httpx and browsers do); an answer cut short by a fault closes the connection; the fault is logged
through the server's log, with its traceback."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from signserver.clock import SystemClock
from signserver.descriptors import DescriptorReserve
from signserver.http.asgi_server import AsgiServer, ConnectionLimits
from signserver.http.csc.errors import install_error_handlers
from tests.raw_http import CutShort, fine, read_answer

pytestmark = pytest.mark.one_store  # touches no store


async def _fault(request: Request) -> PlainTextResponse:
    raise RuntimeError("a fault of the server")


def csc_like_app() -> FastAPI:
    """The CSC front's error handlers: the fault answered by its own 500 (error_reason INTERNAL)."""
    app = FastAPI()
    install_error_handlers(app)
    app.add_api_route("/fault", _fault, methods=["POST"])
    app.add_api_route("/fine", fine, methods=["GET"])
    app.router.routes.append(Route("/cut-short", CutShort(), methods=["GET"]))
    return app


def bare_app() -> Starlette:
    """No handler of its own: Starlette's plain 500."""
    return Starlette(routes=[Route("/fault", _fault, methods=["POST"]), Route("/fine", fine, methods=["GET"]),
                             Route("/cut-short", CutShort(), methods=["GET"])])


APPS = {"csc-handlers": csc_like_app, "starlette-default": bare_app}


@pytest.fixture
def server_log():
    logger = logging.getLogger("tests.http.asgi_server_faults")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield logger, records
    logger.removeHandler(handler)


@pytest.fixture(params=sorted(APPS))
def served(request, server_log):
    """(base URL, port, log records) of the app named by the parameter, served on a loop thread."""
    logger, records = server_log
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = AsgiServer(APPS[request.param](), "127.0.0.1:0", "test.listen",
                        ConnectionLimits(5, 16, DescriptorReserve()), SystemClock(), logger=logger)
    port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
    yield f"http://127.0.0.1:{port}", port, records
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_a_connection_serves_the_next_request_after_a_500_answered_whole(served):
    _, port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"POST /fault HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        fault = read_answer(connection)
        assert fault.startswith(b"HTTP/1.1 500 ")
        assert b"a fault of the server" not in fault
        connection.sendall(b"GET /fine HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            following = read_answer(connection)
        except ConnectionResetError:
            following = b"(connection reset)"
    # Had the connection been closed, the 500 would have had to say Connection: close (RFC 9112 9.6).
    assert following.startswith(b"HTTP/1.1 200 "), (fault, following)
    assert following.endswith(b"\r\n\r\nfine")


def test_one_client_goes_on_after_a_fault_without_a_transport_error(served):
    url, _, _ = served
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(20):
            assert client.post("/fault").status_code == 500
            answer = client.get("/fine")
            assert (answer.status_code, answer.text) == (200, "fine")


def test_a_fault_after_the_answer_is_logged_once_with_its_traceback(served, caplog):
    """By the app's handler when it logs it (the CSC front's), else by the server's log."""
    url, _, records = served
    caplog.set_level(logging.ERROR, logger="signserver.http.csc.errors")

    def faults() -> list[logging.LogRecord]:
        handlers = [record for record in caplog.records if record.name == "signserver.http.csc.errors"]
        return [record for record in records + handlers if record.levelno >= logging.ERROR]

    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.post("/fault").status_code == 500
        deadline = time.monotonic() + 10  # the answer may reach the client before the fault is logged
        while not faults() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.get("/fine").text == "fine"  # by then, Starlette's raising it again is over
    [fault] = faults()
    assert fault.exc_info is not None and "a fault of the server" in str(fault.exc_info[1])


def test_an_answer_cut_short_by_a_fault_closes_the_connection(served):
    url, port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET /cut-short HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 ") and received.endswith(b"begun")  # then the close: no more
    with httpx.Client(base_url=url, timeout=30) as client:  # a new connection is served
        assert client.get("/fine").text == "fine"
