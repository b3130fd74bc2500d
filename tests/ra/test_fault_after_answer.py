"""A fault of the RA's app once its answer went out whole, served as `signserver ra serve` serves
it (plain uvicorn, its h11 protocol, the app wrapped by signserver.ra.server.served_app), over real
HTTP on a free loopback port: the connection serves the client's next request (httpx and browsers
reuse it), and an answer cut short still closes the connection.

No client input makes the RA's own pages or API fault, so the fault comes from small apps here:
Starlette's plain 500, and a handler of ``Exception`` answering the fault (as the RA's site does),
after which Starlette raises the fault again for the server."""

from __future__ import annotations

import logging
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

from signserver.ra.server import served_app
from tests.raw_http import CutShort, fine, read_answer

pytestmark = pytest.mark.one_store  # touches no store


async def _fault(request: Request) -> PlainTextResponse:
    raise RuntimeError("a fault of the RA")


async def _error_page(request: Request, exc: Exception) -> HTMLResponse:
    return HTMLResponse("<!doctype html><title>500</title><p>500</p>", status_code=500)


ROUTES = [Route("/fault", _fault, methods=["POST"]), Route("/fine", fine), Route("/cut-short", CutShort())]
APPS = {"starlette-default": lambda: Starlette(routes=ROUTES),
        "error-page-handler": lambda: Starlette(routes=ROUTES, exception_handlers={Exception: _error_page})}


@pytest.fixture(params=sorted(APPS))
def port(request):
    """The port of the app named by the parameter, served as the RA serves its site."""
    server = uvicorn.Server(uvicorn.Config(served_app(APPS[request.param]()), lifespan="off", log_level="warning",
                                           access_log=False, http="h11", proxy_headers=False))
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        thread.join(0.01)
    assert server.started
    yield listening.getsockname()[1]
    server.should_exit = True
    thread.join(30)
    listening.close()


def test_the_ra_serves_the_next_request_on_a_connection_after_its_500(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"POST /fault HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        fault = read_answer(connection)
        assert fault.startswith(b"HTTP/1.1 500 ") and b"a fault of the RA" not in fault
        connection.sendall(b"GET /fine HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            following = read_answer(connection)
        except ConnectionResetError:
            following = b"(connection reset)"
    # Had the connection been closed, the 500 would have had to say Connection: close (RFC 9112 9.6).
    assert following.startswith(b"HTTP/1.1 200 ") and following.endswith(b"\r\n\r\nfine"), (fault, following)


def test_a_client_of_the_ra_goes_on_after_a_fault_without_a_transport_error(port):
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for _ in range(10):
            assert client.post("/fault").status_code == 500
            answer = client.get("/fine")
            assert (answer.status_code, answer.text) == (200, "fine")


def test_an_answer_of_the_ra_cut_short_by_a_fault_closes_the_connection(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET /cut-short HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 ") and received.endswith(b"begun")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        assert client.get("/fine").text == "fine"


def test_the_ra_logs_a_fault_after_its_answer_for_debugging_only(port, caplog):
    # The site's error page logged the fault already, with its traceback (ra/web/rendering.py).
    with caplog.at_level(logging.DEBUG, logger="signserver.ra.server"):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert client.post("/fault").status_code == 500
        deadline = time.monotonic() + 10
        while not [r for r in caplog.records if r.name == "signserver.ra.server"] and time.monotonic() < deadline:
            time.sleep(0.01)
    noted = [r for r in caplog.records if r.name == "signserver.ra.server"]
    assert [r.levelno for r in noted] == [logging.DEBUG]
    assert noted[0].exc_info is not None and "a fault of the RA" in str(noted[0].exc_info[1])
