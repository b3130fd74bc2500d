"""Freed memory goes back to the system at once (glibc's allocator, where there is one).

A password check (argon2id) takes 19 MiB. glibc serves a block that large with mmap, but once
such a block is freed it raises its mmap threshold, so the next ones come from the heap of the
asking thread, where freed memory stays: with four password-checking threads a worker kept about
80 MB it no longer used. A fixed threshold keeps large blocks in mmap, unmapped when freed.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
LARGE_BLOCK = 256 * 1024


def return_large_blocks_promptly() -> bool:
    """Serve blocks of LARGE_BLOCK bytes and more with mmap from now on; False where the C
    library has no mallopt (musl) or refuses."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK) == 1
    if not done:
        log.warning("the C library refused a fixed mmap threshold; freed memory may stay resident")
    return done
