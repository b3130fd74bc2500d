"""Where the endpoints' blocking work runs: fixed pools of threads that refuse rather than queue
without bound."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from signserver.errors import ServerBusy

T = TypeVar("T")


class BoundedPool:
    """``threads`` threads and at most ``max_waiting`` calls waiting for one. Used from one event
    loop's thread."""

    def __init__(self, name: str, threads: int, max_waiting: int):
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._name = name
        self._limit = threads + max_waiting
        self._pending = 0  # only touched from the event loop's thread

    async def run(self, function: Callable[[], T]) -> T:
        """Run ``function`` in one of the pool's threads.

        Raises: ServerBusy: the pool's threads are busy and its queue is full; what ``function``
        raises.
        """
        if self._pending >= self._limit:
            raise ServerBusy(f"the server is busy ({self._name}); try again shortly")
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, function)
        finally:
            self._pending -= 1

    def shutdown(self) -> None:
        """Drop the calls still waiting and wait for those under way (an HSM call is never cut)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
