"""Server workers run as batch work for the kernel's scheduler (Linux's SCHED_BATCH).

A gRPC call passes through several threads of a worker: gRPC's I/O threads read and decrypt it,
its completion-queue thread hands each event to the event loop, which runs the call. Each hand-over
wakes a thread, and the kernel lets a thread it wakes preempt the one running on its core: under a
single-digest SignHash load a worker's event loop was preempted 8 times per call (about 4,200 times
a second), each time losing its core in the middle of its work and the caches with it; as batch
work, 1.3 times. A thread of SCHED_BATCH, woken, waits for the running one to block or to use up
its time slice; it still gets its fair share of the CPU (the policy has no priority of its own, and
the worker's nice value stands). Measured on a 2-core machine: about 5 % more single-digest calls
against a server of the ordinary policy measured alternately, 5 to 14 % in whole runs, with 70 to
180 µs less of the workers' CPU per call and the same p99 (docs/performance.md, "Workers as batch work").
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def schedule_as_batch_work() -> bool:
    """Make the calling thread batch work, and with it every thread it starts from now on (a new
    thread takes its creator's policy): call before a worker starts its threads.

    Returns False where the platform has no SCHED_BATCH, or refuses it (logged).
    """
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError as exc:
        log.warning("the workers keep the default scheduling policy: SCHED_BATCH refused (%s)", exc.strerror)
        return False
    return True
