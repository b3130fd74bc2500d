"""A child process that ends with the process that started it.

A worker re-parented to init when its supervisor dies (SIGKILL, the OOM killer, a signal it does
not handle) would go on serving the port with nobody to restart or stop it, and a new server
started there would be refused the address. On Linux the kernel sends a child a chosen signal when
its parent dies (``PR_SET_PDEATHSIG``); the child asks for SIGTERM, the signal of an ordinary stop,
so that it drains its calls in flight as it would then.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def end_with_parent(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """Have the kernel send ``signum`` to this process when its parent dies; called first thing in
    a child forked by ``parent_pid``. A parent that died before the request took effect is not
    reported by the kernel: this process then has another parent already, and exits at once
    (SystemExit, status 0). Elsewhere than on Linux nothing is asked, and a warning says so.

    The signal goes when the parent's forking thread ends: the parent forks from its main thread.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            log.warning("process %d will not stop with its parent: prctl: %s", os.getpid(), os.strerror(errno))
    else:
        log.warning("process %d will not stop with its parent on %s", os.getpid(), sys.platform)
    if os.getppid() != parent_pid:  # the parent died between the fork and the request
        log.warning("process %d: its parent %d is gone; exiting", os.getpid(), parent_pid)
        raise SystemExit(0)
