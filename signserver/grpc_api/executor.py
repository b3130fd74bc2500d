"""Where blocking work runs while the event loop keeps serving."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


class BlockingCalls:
    """A small thread pool where blocking calls into the service run.

    The server keeps two: one for calls that only reach the HSM (PKCS#11 calls are serialised by
    the process-wide lock anyway, so a burst queues here in order instead of piling up threads),
    and one for calls that check passwords (argon2 is slow on purpose and memory-hungry, so a
    flood of logins is bounded by this pool and cannot starve signing).
    """

    def __init__(self, name: str, threads: int):
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    async def run(self, function: Callable[..., T], *args, **kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(function, *args, **kwargs))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
