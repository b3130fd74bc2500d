"""The CSC front's log of its own faults, over real HTTP (AsgiServer on a free loopback port): a
fault any client can repeat is logged with its traceback once, then at most one line a minute that
says how many were left out, as the other fronts log theirs (signserver/monitoring/fault_log.py)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import httpx
import pytest
from fastapi import FastAPI

from signserver import errors
from signserver.clock import ManualClock, SystemClock
from signserver.descriptors import DescriptorReserve
from signserver.http.asgi_server import AsgiServer, ConnectionLimits
from signserver.http.csc.errors import install_error_handlers, new_fault_log

CSC_LOG = "signserver.http.csc.errors"


async def _unexpected() -> dict:
    raise RuntimeError("an unexpected fault")


async def _hsm_fault() -> dict:
    raise errors.HsmOperationFailed("CKR_GENERAL_ERROR at slot 3")


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def url(clock):
    app = FastAPI()
    install_error_handlers(app, new_fault_log(clock))
    app.add_api_route("/unexpected", _unexpected, methods=["POST"])
    app.add_api_route("/hsm-fault", _hsm_fault, methods=["POST"])
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = AsgiServer(app, "127.0.0.1:0", "test.listen", ConnectionLimits(5, 16, DescriptorReserve()),
                        SystemClock(), logger=logging.getLogger("tests.csc.fault_log.server"))
    port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
    yield f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _csc_lines(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == CSC_LOG and record.levelno >= logging.WARNING]


@pytest.mark.parametrize("path", ["/unexpected", "/hsm-fault"])
def test_a_repeated_fault_is_logged_in_full_once_then_once_a_minute_with_the_count(url, clock, caplog, path):
    caplog.set_level(logging.DEBUG, logger=CSC_LOG)
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(5):
            assert client.post(path).status_code == 500
        lines = _csc_lines(caplog)
        assert len(lines) == 1, [record.getMessage() for record in lines]
        assert lines[0].levelno == logging.ERROR and lines[0].exc_info and lines[0].exc_info[1] is not None
        clock.advance(seconds=61)
        assert client.post(path).status_code == 500
    lines = _csc_lines(caplog)
    assert len(lines) == 2
    assert "(and 4 times since this was last logged)" in lines[1].getMessage()


def test_a_fault_the_csc_front_logged_is_not_logged_again_by_the_server(url, caplog):
    """Starlette raises a fault its 500 answered once more, for the server: the CSC front's own line
    (with the path and traceback) is the only one, and the connection still serves the next request."""
    caplog.set_level(logging.DEBUG)
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.post("/unexpected").status_code == 500
        assert client.post("/hsm-fault").status_code == 500
    faults = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert [record.name for record in faults] == [CSC_LOG], [record.getMessage() for record in faults]


def test_a_fault_of_an_asynchronous_operation_is_logged_in_full_once_then_counted(csc_service, csc_application,
                                                                                  caplog):
    """The work of an operation started with operationMode "A" runs after its answer went out: a
    fault of ours in it is logged as the synchronous call's would be, once with its traceback, and
    its outcome is the 500 the synchronous call would have answered."""
    from signserver.blocking_calls import BlockingCalls
    from signserver.http.csc.context import CscContext
    from signserver.http.csc.operations import operation_store, start_operation

    caplog.set_level(logging.DEBUG)
    context = CscContext(service=csc_service, hsm=BlockingCalls("fault-hsm", threads=1),
                         accounts=BlockingCalls("fault-accounts", threads=2),
                         documents=BlockingCalls("fault-documents", threads=1))
    application, _ = csc_application

    async def failing() -> dict:
        raise RuntimeError("an unexpected fault of the operation")

    async def run_three() -> list:
        outcomes = []
        for _ in range(3):
            response_id = (await start_operation(context, application, failing,
                                                 method="POST /csc/v2/signatures/signHash"))["responseID"]
            deadline = time.monotonic() + 30
            while (outcome := await context.accounts.run(operation_store(context).outcome, application.id,
                                                         response_id)).running:
                assert time.monotonic() < deadline, "the operation did not end"
                await asyncio.sleep(0.01)
            outcomes.append(outcome)
        return outcomes

    try:
        outcomes = asyncio.run(run_three())
    finally:
        for pool in (context.hsm, context.accounts, context.documents):
            pool.shutdown()
    assert [outcome.status_code for outcome in outcomes] == [500, 500, 500]
    assert all(b"the server's log has the details" in outcome.answer for outcome in outcomes)
    faults = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(faults) == 1, [record.getMessage() for record in faults]
    assert faults[0].exc_info and "an unexpected fault of the operation" in str(faults[0].exc_info[1])
