"""This process's bound on its memory as the fronts weigh their work against it: the bound
(RLIMIT_DATA, set on each worker by signserver.grpc_api.worker_memory), the data held now, the
headroom kept below the bound, and what a document costs a worker. Shared by gRPC's streams and
the CSC API's request bodies, so that the two fronts weigh alike."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal

log = logging.getLogger(__name__)

MIB = 1 << 20
# A document being signed is held about twice (measured: a PrepareSignature of a 186 MB document
# added 108 MiB; the CSC API holds a request's bytes and their decoded text).
DOCUMENT_COPIES = 2
# Work is refused once the worker's data is within this much of its bound (the larger of the
# two): it is left for the calls under way, and for gRPC's own allocations, whose failure would
# end the worker with every call it serves. Not a share of the bound alone: a worker keeps the
# thread stacks and malloc arenas its busiest moment made (measured: 186 MiB of data at rest,
# 259 MiB after four 186 MB documents at once), and a low bound would then refuse everything.
MEMORY_HEADROOM_BYTES = 48 << 20
MEMORY_HEADROOM_SHARE = 0.1
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def memory_bound() -> int | None:
    """This process's bound on its data (RLIMIT_DATA's soft limit) in bytes; None: none."""
    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    return None if soft == resource.RLIM_INFINITY else soft


def data_bytes() -> int:
    """The data this process holds now as the kernel counts it for RLIMIT_DATA (statm's data
    field: private writable memory, thread stacks included, as reserved, not as touched)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[5]) * _PAGE_SIZE


def headroom(bound: int) -> int:
    """The bytes kept free below ``bound`` (see MEMORY_HEADROOM_*)."""
    return max(MEMORY_HEADROOM_BYTES, int(bound * MEMORY_HEADROOM_SHARE))


def near_bound(bound: int) -> bool:
    """Whether this process's data is within the headroom of ``bound``."""
    return data_bytes() > bound - headroom(bound)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the process's memory bound reached: an allocation failed, or a thread
    could not be started (its stack counts in the bound)."""
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and str(exc) == "can't start new thread"
                                            and memory_bound() is not None)


def where_raised(exc: BaseException) -> str:
    """The file and line where ``exc`` was raised, for the log; its traceback is dropped, so that
    the frames, and what they hold (a request's content), go now rather than with ``exc``."""
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    exc.__traceback__ = None
    return f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame is not None else "?"


# After a refusal for memory, the worker's data is looked at again this much later, once the calls
# under way have had time to release theirs.
MEMORY_RECHECK_SECONDS = 5.0
_recheck: asyncio.TimerHandle | None = None
_replacing = False


def recheck_memory_later() -> None:
    """After a refusal for memory: look again in MEMORY_RECHECK_SECONDS (see _replace_if_memory_kept)."""
    global _recheck
    if _recheck is None and memory_bound() is not None:
        _recheck = asyncio.get_running_loop().call_later(MEMORY_RECHECK_SECONDS, _replace_if_memory_kept)


def _replace_if_memory_kept() -> None:
    """Stop this worker (SIGTERM: it finishes its calls) when its data is still within the headroom
    of its bound: the supervisor starts a fresh one. A worker keeps the malloc arenas and thread
    stacks of its busiest moment (measured: 186 MiB at rest, 275 MiB after refusals under a 320 MiB
    bound), and one that stays near its bound would refuse every large request from then on."""
    global _recheck, _replacing
    _recheck = None
    bound = memory_bound()
    if _replacing or bound is None or not near_bound(bound):
        return
    _replacing = True
    log.error("worker (pid %d) keeps %d MiB of data, within the headroom of its %d MiB bound, after refusing a "
              "request for memory: it finishes its calls and is replaced", os.getpid(), data_bytes() >> 20, bound >> 20)
    os.kill(os.getpid(), signal.SIGTERM)
