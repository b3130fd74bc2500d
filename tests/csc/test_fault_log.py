"""The CSC front's log of its own faults, over real HTTP (AsgiServer on a free loopback port): a
fault any client can repeat is logged with its traceback once, then at most one line a minute that
says how many were left out, as the other fronts log theirs (signserver/http/fault_log.py)."""

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
from signserver.http.csc.errors import install_error_handlers

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
    install_error_handlers(app, clock)
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
