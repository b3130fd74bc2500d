"""What the HTTP fronts' call figures count, over real HTTP on a free loopback port: a route's
label is the path the app serves it at (its router's prefix included); a CSC refusal is counted by
the reason its answer carries, a fault no handler answered by INTERNAL, and a front whose answers
carry no reason (the CA's) counts none."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import JSONResponse

from signserver import errors
from signserver.clock import SystemClock
from signserver.descriptors import DescriptorReserve
from signserver.http.asgi_server import AsgiServer, ConnectionLimits
from signserver.http.call_metrics import CallMetrics, note_refusal
from signserver.http.csc.errors import UNEXPECTED, install_error_handlers
from signserver.monitoring.meter import Meter, install_meter, meter


class RecordingMeter(Meter):
    """The calls reported, as (front, method, status, reason)."""

    def __init__(self):
        self.calls: list[tuple[str, str, str, str | None]] = []

    def call_finished(self, front, method, status, seconds, reason=None):
        self.calls.append((front, method, status, reason))


def faulty_app(front: str, faults_refused_with) -> FastAPI:
    router = APIRouter()

    @router.post("/disabled")
    async def disabled() -> dict:
        raise errors.AccountDisabled("the account is disabled")

    @router.post("/fault")
    async def fault() -> dict:
        raise RuntimeError("a fault of the server")

    @router.post("/answered")
    async def answered(request: Request) -> JSONResponse:
        note_refusal(request.scope, errors.InvalidArgument)  # noted, then answered all the same
        return JSONResponse({})

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router, prefix="/api/v2")
    app.add_middleware(CallMetrics, front=front, faults_refused_with=faults_refused_with)
    return app


@pytest.fixture
def recorded():
    previous, recording = meter(), RecordingMeter()
    install_meter(recording)
    yield recording
    install_meter(previous)


def serve(app: FastAPI):
    """Serve ``app`` over plain HTTP on a loop thread; returns (base URL, stop)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = AsgiServer(app, "127.0.0.1:0", "test.listen", ConnectionLimits(5, 16, DescriptorReserve()), SystemClock())
    port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    return f"http://127.0.0.1:{port}", stop


def test_csc_refusals_and_faults_are_counted_by_the_reason_their_answer_carries(recorded):
    url, stop = serve(faulty_app("csc", UNEXPECTED))
    try:
        with httpx.Client(base_url=url, timeout=30) as client:  # one connection: a fault's 500 leaves it usable
            bodies = [client.post(path) for path in ("/api/v2/disabled", "/api/v2/fault", "/api/v2/answered")]
    finally:
        stop()
    assert [(answer.status_code, answer.json().get("error_reason")) for answer in bodies] == [
        (403, "ACCOUNT_DISABLED"), (500, "INTERNAL"), (200, None)]
    assert "a fault of the server" not in bodies[1].text
    assert recorded.calls == [("csc", "POST /api/v2/disabled", "403", "ACCOUNT_DISABLED"),
                              ("csc", "POST /api/v2/fault", "500", "INTERNAL"),
                              ("csc", "POST /api/v2/answered", "200", None)]


def test_a_front_whose_answers_carry_no_reason_counts_none_for_a_fault(recorded):
    url, stop = serve(faulty_app("ca", None))
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.post("/api/v2/fault").status_code == 500
    finally:
        stop()
    assert recorded.calls == [("ca", "POST /api/v2/fault", "500", None)]
