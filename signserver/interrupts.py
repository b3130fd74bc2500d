"""interrupts_held: a block that Ctrl-C does not cut in two, for the commands of the core and the RA,
and for every call to the token."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def interrupts_held(note: str = "") -> Iterator[None]:
    """Hold Ctrl-C for the block: where it raises KeyboardInterrupt (Python's own SIGINT handler,
    in the main thread), one that comes is acted on once the block has ended, ``note`` (if any)
    said on standard error at once. Elsewhere (another thread; SIGINT ignored, or handled otherwise,
    as by a server's event loop) nothing raises within the block, and it runs as it is.

    Raises: KeyboardInterrupt: a Ctrl-C came during the block (after the block's own error, if
            any: that one is raised instead).
    """
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler \
            or threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum, _frame) -> None:
        if not caught and note:
            print(note, file=sys.stderr, flush=True)
        caught.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
