"""Where blocking work runs while the event loop keeps serving."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


class HsmExecutor:
    """A small thread pool for calls into the service that reach the HSM.

    PKCS#11 calls are serialised by the process-wide lock anyway; the pool is small so that a
    burst of requests queues here, in order, instead of piling up threads.
    """

    def __init__(self, threads: int = 2):
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hsm")

    async def run(self, function: Callable[..., T], *args, **kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(function, *args, **kwargs))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
