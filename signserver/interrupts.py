"""interrupts_held: a block that Ctrl-C, SIGTERM or a hang-up does not cut in two, for the commands
of the core and the RA, and for every call to the token."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager, suppress
from typing import Iterator

# signal.getsignal's own C function: signal.getsignal turns a handler that is a Python function (the
# servers' event loops install such) into its answer by raising and catching a ValueError, about
# 10 µs on every call to the token, on the way to every signature; this takes 0.3 µs.
from _signal import getsignal as _handler_of

# Signals that, left to their default action, end a process at once: an orchestrator's or `kill`'s
# stop, and a terminal's hang-up. SIGQUIT (Ctrl-\) is not held: it stays the way to stop a process
# whose call to a network HSM never returns.
ENDING_SIGNALS = (int(signal.SIGTERM), int(signal.SIGHUP))
_SIGINT = int(signal.SIGINT)


@contextmanager
def interrupts_held(note: str = "") -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP for the block: one that comes is acted on once the block has
    ended, ``note`` (if any) said on standard error at once. Ctrl-C is held where it raises
    KeyboardInterrupt (Python's own SIGINT handler), SIGTERM and SIGHUP where they would end the
    process (their default action), and then do so as the block ends: a SoftHSM token's file is
    rewritten at every login, and a process ended in the middle leaves the token unreadable. A
    signal handled otherwise (ignored, or by a server's event loop) is left to its handler, and
    nothing is held in a thread other than the main one (Python runs handlers there only).

    Raises: KeyboardInterrupt: a Ctrl-C came during the block (after the block's own error, if
            any: that one is raised instead). A SIGTERM or SIGHUP held ends the process, even then.
    """
    held = []
    if threading.current_thread() is threading.main_thread():
        held = [signum for signum in ENDING_SIGNALS if _handler_of(signum) == signal.SIG_DFL]
        if _handler_of(_SIGINT) is signal.default_int_handler:
            held.append(_SIGINT)
    if not held:
        yield
        return
    caught: list[int] = []

    def hold(signum, _frame) -> None:
        if not caught and note:
            print(note, file=sys.stderr, flush=True)
        caught.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        ending = [signum for signum in caught if signum != _SIGINT]
        if ending:
            for stream in (sys.stdout, sys.stderr):  # what the block said is not lost with the process
                with suppress(OSError, ValueError):
                    stream.flush()
            # Its default action, restored above: the process ends here, whatever the block raised.
            signal.raise_signal(ending[0])
    if caught:
        raise KeyboardInterrupt
