"""Where blocking work runs while the event loop keeps serving."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from signserver.errors import ServerBusy

T = TypeVar("T")


class BlockingCalls:
    """A small thread pool where blocking calls into the service run.

    The server keeps two: one for calls that only reach the HSM (PKCS#11 calls are serialised by
    the process-wide lock anyway, so a burst queues here in order instead of piling up threads),
    and one for calls that check passwords (argon2 is slow on purpose and memory-hungry, so a
    flood of logins is bounded by this pool and cannot starve signing).
    """

    def __init__(self, name: str, threads: int, max_waiting: int = 256):
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._name = name
        self._limit = threads + max_waiting
        self._pending = 0  # only touched from the event loop's thread

    async def run(self, function: Callable[..., T], *args, **kwargs) -> T:
        """Run ``function`` in the pool.

        Raises: ServerBusy: more calls are waiting than the pool takes (a flood of logins is
        refused at once instead of queueing without bound).
        """
        if self._pending >= self._limit:
            raise ServerBusy(f"the server is busy ({self._name}); try again shortly")
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, functools.partial(function, *args, **kwargs))
        finally:
            self._pending -= 1

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
