"""Awaiting blocking work that must not be abandoned half-way.

A cancelled coroutine stops awaiting, but a thread it started goes on: files and limits the
caller holds would be released under that thread. These helpers wait the work out first.
"""

from __future__ import annotations

import asyncio
from typing import Callable, TypeVar

T = TypeVar("T")


async def off_the_loop(function: Callable[..., T], *args) -> T:
    """Run a short blocking call (file I/O) in the event loop's default thread pool; if the
    caller is cancelled meanwhile, wait for the call to end before raising CancelledError (so
    that the caller's files are not closed under it).

    Raises: what ``function`` raises; asyncio.CancelledError: the caller was cancelled.
    """
    running = asyncio.get_running_loop().run_in_executor(None, function, *args)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await outlast(running)
        raise


async def outlast(running: asyncio.Future) -> None:
    """Wait until ``running`` ends, through any further cancellation; its outcome is dropped
    (the caller that wanted it is gone)."""
    while not running.done():
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            continue
        except Exception:  # the outcome of a cancelled call: nobody is left to report it to
            break
    if not running.cancelled():
        running.exception()  # retrieved, so asyncio does not log it as never retrieved
