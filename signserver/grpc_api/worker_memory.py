"""Each worker's bound on its memory (``server.worker_memory_mb``), so that one client's request
cannot take the node's memory from the other workers and the database.

The supervisor derives the bound (:func:`worker_memory_bound`) and each worker sets it on itself
after the fork (:func:`apply_bound`, RLIMIT_DATA). gRPC's C core aborts the whole process when one
of its allocations fails, so the worker keeps from reaching its bound where it can: a stream's
next message is refused once its data comes within a headroom of the bound (:func:`check_memory`),
and a call whose own allocation failed is refused (:func:`memory_refusal`); both as
MemoryExhausted (RESOURCE_EXHAUSTED). A worker that still holds that much a little later is
replaced by the supervisor.
"""

from __future__ import annotations

import logging
import os
import resource

from signserver.config import Config
from signserver.config.values import MIN_WORKER_MEMORY_MB
from signserver.errors import MemoryExhausted
from signserver.grpc_api.stream_limits import DocumentLimits
from signserver.memory_bound import (DOCUMENT_COPIES, MIB, data_bytes, memory_bound, near_bound, recheck_memory_later,
                                     where_raised)

log = logging.getLogger(__name__)

# What server.worker_memory_mb = "auto" gives a worker, in MiB of data (RLIMIT_DATA, the kernel's
# VmData: private writable memory; see worker_memory_bound). Measured on a worker of one CPU's
# share: 186-236 MiB at rest and after calls (94-382 MB resident with 100-10,000 credentials on
# the token), so the rest of it is kept for password checks (4 x 19 MiB), streams and the HTTP
# fronts; a PrepareSignature of a 186 MB document added 108 MiB, twice that is kept for each
# document being signed at once (DOCUMENT_COPIES).
WORKER_BASE_MB = 512
# /proc and cgroup files that cap this machine's memory below its physical size (containers).
CGROUP_MEMORY_FILES = ("/sys/fs/cgroup{path}/memory.max", "/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")


def machine_memory_bytes() -> int | None:
    """This machine's memory as this process may use it: the physical memory, or the memory limit
    of its control group (cgroup v2 or v1, as a container has) when lower. None: unknown."""
    try:
        found = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        found = None
    try:
        with open("/proc/self/cgroup") as cgroups:
            paths = {line.split(":", 2)[2].strip() for line in cgroups
                     if line.split(":", 2)[1] in ("", "memory")}
    except (OSError, IndexError):
        paths = set()
    for path in paths | {""}:
        for pattern in CGROUP_MEMORY_FILES:
            try:
                with open(pattern.format(path=path.rstrip("/"))) as limit:
                    text = limit.read().strip()
            except OSError:
                continue
            if text.isdigit() and (found is None or int(text) < found):
                found = int(text)
    return found


def worker_memory_bound(config: Config, workers: int, machine_bytes: int | None = None) -> int | None:
    """The bytes of data (RLIMIT_DATA) each of ``workers`` workers may take; None: no bound.

    ``server.worker_memory_mb`` in MiB, or on "auto" what a worker needs: WORKER_BASE_MB, and
    DOCUMENT_COPIES times ``pades.max_document_mb`` for each document it signs at once; but no
    more than the machine's memory (``machine_bytes``, by default :func:`machine_memory_bytes`)
    shared among the workers, and no less than a worker needs to start. Warns when the bound the
    workers have between them is more than the machine has, or less than a worker may need.
    """
    setting = config.server.worker_memory_mb
    if setting == 0:
        return None
    machine = machine_memory_bytes() if machine_bytes is None else machine_bytes
    need = (WORKER_BASE_MB + DOCUMENT_COPIES * DocumentLimits.document_threads * config.pades.max_document_mb) * MIB
    share = machine // max(workers, 1) if machine else None
    if setting != "auto":
        bound = setting * MIB
        if share is not None and bound > share:
            log.warning("server.worker_memory_mb = %d for %d worker(s) is more than this machine's %d MiB: "
                        "the workers together may still exhaust it", setting, workers, machine // MIB)
        return bound
    if share is None or share >= need:
        return need
    bound = max(share, MIN_WORKER_MEMORY_MB * MIB)
    log.warning("this machine's %d MiB shared among %d worker(s) is %d MiB each, less than the %d MiB a worker may "
                "need for documents of pades.max_document_mb = %d: larger documents may be refused (fewer workers, "
                "or a lower pades.max_document_mb, fit this machine)", machine // MIB, workers, bound // MIB,
                need // MIB, config.pades.max_document_mb)
    return bound


def apply_bound(index: int, bound: int | None, setting: int | str) -> None:
    """Set this worker's RLIMIT_DATA to ``bound`` bytes (none: left as inherited) and log the
    bound in effect.

    RLIMIT_DATA and not RLIMIT_AS: a worker at rest maps about 900 MiB (shared libraries, the
    font, each thread's malloc arena reserved whole, 64 MiB each) but writes only about 190 MiB of
    it; its mapped size grows with every thread that allocates, its data with what it keeps.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if bound is not None:
        if hard != resource.RLIM_INFINITY and hard < bound:
            bound = hard  # the hard limit it was started with stays the ceiling
        resource.setrlimit(resource.RLIMIT_DATA, (bound, bound))
        soft = bound
    if soft == resource.RLIM_INFINITY:
        log.info("worker %d (pid %d): no memory bound (server.worker_memory_mb = %s)", index, os.getpid(), setting)
    else:
        log.info("worker %d (pid %d): memory bound %d MiB of data (RLIMIT_DATA; server.worker_memory_mb = %s)",
                 index, os.getpid(), soft // MIB, setting)


def check_memory() -> None:
    """Raises: MemoryExhausted: this worker's data is within the headroom of its bound."""
    bound = memory_bound()
    if bound is not None and near_bound(bound):
        log.error("a stream was refused with RESOURCE_EXHAUSTED: the worker's data (%d MiB) is near its memory bound "
                  "(%d MiB)", data_bytes() >> 20, bound >> 20)
        recheck_memory_later()
        raise MemoryExhausted(f"the server's worker is near its memory bound ({bound >> 20} MiB) with the work "
                              "under way; this request is refused: try again shortly, or with a smaller document")


def memory_refusal(method: str, exc: Exception) -> MemoryExhausted:
    """Log once, at ERROR, that ``method`` reached the worker's memory bound (where, not with what:
    no request content); return the refusal to send, and look again in MEMORY_RECHECK_SECONDS."""
    bound = memory_bound()
    where = where_raised(exc)
    limit = f"{bound >> 20} MiB" if bound is not None else "none set"
    log.error("%s reached the worker's memory bound (%s; %s at %s); refused with RESOURCE_EXHAUSTED", method, limit,
              type(exc).__name__, where)
    recheck_memory_later()
    return MemoryExhausted(f"the request needs more memory than the server's worker may take ({limit}); it is "
                           "refused: try again with a smaller document, or later if the server is busy")
