"""Where the endpoints' blocking work runs: fixed pools of threads that refuse rather than queue
without bound."""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from signserver.errors import ServerBusy
from signserver.http.rate_limit import client_key

T = TypeVar("T")


class BoundedPool:
    """``threads`` threads and at most ``max_waiting`` calls waiting for one, of which one client
    has at most ``per_client`` under way or waiting (None: no share; by default a quarter of the
    whole), so that one client's flood leaves room for the others. Used from one event loop's
    thread."""

    def __init__(self, name: str, threads: int, max_waiting: int, per_client: int | None = None):
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._name = name
        self._limit = threads + max_waiting
        self._per_client = per_client if per_client is not None else max(1, self._limit // 4)
        self._pending = 0  # only touched from the event loop's thread, as is _by_client
        self._by_client: collections.Counter[str] = collections.Counter()

    async def run(self, function: Callable[[], T], client: str | None = None) -> T:
        """Run ``function`` in one of the pool's threads, for ``client`` (an IP address, counted
        under rate_limit.client_key, as TokenBuckets counts it; None: in the whole only).

        Raises: ServerBusy: the pool's threads are busy and its queue is full, or the client has
        its share of them; what ``function`` raises.
        """
        client = client_key(client) if client is not None else None
        if self._pending >= self._limit or (client is not None and self._by_client[client] >= self._per_client):
            raise ServerBusy(f"the server is busy ({self._name}); try again shortly")
        self._pending += 1
        if client is not None:
            self._by_client[client] += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, function)
        finally:
            self._pending -= 1
            if client is not None:
                self._by_client[client] -= 1
                if not self._by_client[client]:
                    del self._by_client[client]

    def shutdown(self) -> None:
        """Drop the calls still waiting and wait for those under way (an HSM call is never cut)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
