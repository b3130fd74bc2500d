"""Whether a descriptor has something to read (or has ended), whatever its number: select.select
takes only descriptors below 1024 (FD_SETSIZE), and a long test process may hold more."""

from __future__ import annotations

import select
from typing import IO


def readable(source: int | IO, timeout: float | None) -> bool:
    """Whether ``source`` (a descriptor, or an object with ``fileno()``) can be read without
    waiting, or has ended, within ``timeout`` seconds (None: however long it takes)."""
    poller = select.poll()
    poller.register(source, select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1000))
