"""Holding every thread of a server's pool busy, as a load would, to show what does not wait for it."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from signserver.blocking_calls import BlockingCalls


@contextlib.contextmanager
def threads_held(loop: asyncio.AbstractEventLoop, pool: BlockingCalls, threads: int):
    """``threads`` threads of ``pool`` (a BlockingCalls of a server whose event loop is ``loop``)
    busy until the block ends."""
    started, release = threading.Semaphore(0), threading.Event()

    def hold():
        started.release()
        release.wait(60)

    calls = [asyncio.run_coroutine_threadsafe(pool.run(hold), loop) for _ in range(threads)]
    try:
        for _ in range(threads):
            assert started.acquire(timeout=30)
        yield
    finally:
        release.set()
        for call in calls:
            call.result(30)
