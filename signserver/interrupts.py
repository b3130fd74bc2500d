"""interrupts_held: a block that Ctrl-C does not cut in two, for the commands of the core and the RA."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def interrupts_held(note: str) -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) for the block: one that comes is acted on once the block has ended
    (KeyboardInterrupt), ``note`` said on standard error at once. Outside the main thread, or
    where SIGINT is ignored, the block runs as it is.

    Raises: KeyboardInterrupt: a Ctrl-C came during the block (after the block's own error, if
            any: that one is raised instead).
    """
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return
    caught: list[int] = []

    def hold(signum, _frame) -> None:
        if not caught:
            print(note, file=sys.stderr, flush=True)
        caught.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
