"""Verification of a PDF in a child process of its own, niced and killed at a deadline.

Verifying a PDF is pure-Python work whose cost the sender chooses: a 464 kB document with 100
signatures takes tens of seconds. Run in a worker's threads, it holds the worker's GIL and
threads while signing waits. Each verification therefore runs in a child process made by a
multiprocessing "forkserver" that has imported the verification code (and nothing else of the
worker's) once: a child costs a fork of a small process, shares no HSM session, database
connection, gRPC thread or GIL with the worker, runs at the lowest CPU priority, and is killed
when it outlives its deadline: refused for its document if it had its time limit's CPU by then,
for the server's being busy if not. Its only inputs are a file name and plain data (trust
material and limits); its only output is a small result file next to the document.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import resource
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from signserver.errors import InvalidArgument, ServerBusy, SignServerError
from signserver.outlasting import off_the_loop

if TYPE_CHECKING:
    from signserver.pades.verification import DocumentVerdict, TrustMaterial, VerificationLimits

log = logging.getLogger(__name__)

VERIFICATION_MODULE = "signserver.pades.verification"
LOWEST_PRIORITY = 19  # nice(1): the child gets only the CPU that nothing else wants
# Beyond the verification's own time limit (checked by the verifier as it goes): the time a
# child takes to start, and a verifier caught inside one long step.
DEADLINE_MARGIN_SECONDS = 5.0
# Address space a child may map beyond what it starts with (the forkserver's image, shared):
# generous for any document the size limit lets in, small enough that a compression bomb ends
# in a refusal instead of taking the machine's memory.
MEMORY_LIMIT_BYTES = 1 << 30

_forkserver = multiprocessing.get_context("forkserver")


def start_forkserver() -> None:
    """Start this process's forkserver with the verification code imported, if not yet running.

    The first verification of a process starts it (it blocks for a moment: off the event loop);
    a worker that is never asked to verify never pays for it (its start costs about a second of
    CPU, importing pyHanko's verification). The forkserver is started afresh from the
    interpreter, so it inherits nothing of the caller but its environment. ``__main__`` is
    imported there too, so that each child need not.
    """
    _forkserver.set_forkserver_preload(["__main__", VERIFICATION_MODULE])
    from multiprocessing import forkserver

    forkserver.ensure_running()


class VerifierProcesses:
    """Runs each verification in a child process of the forkserver."""

    def __init__(self, nice: int = LOWEST_PRIORITY, memory_bytes: int = MEMORY_LIMIT_BYTES):
        self._nice = nice
        self._memory_bytes = memory_bytes

    async def verify(self, document: Path, trust: "TrustMaterial", limits: "VerificationLimits",
                     deadline_seconds: float) -> "DocumentVerdict":
        """Verify the PDF at ``document`` in a child process.

        Raises:
            InvalidArgument: the document is unreadable, exceeds a verification limit (the time
                limit counts the child's CPU), needs more memory than the child may have, or was
                not verified within ``deadline_seconds`` though the child had the time limit's
                CPU by then (or its CPU could not be read). The child failing in any other way is
                reported the same way (the document is the only thing that varies; the traceback
                goes to the log).
            ServerBusy: the child had less CPU than that by ``deadline_seconds``: the server's
                other work came first.
        A child past its deadline is killed.
        """
        result = document.with_name(document.name + ".verdict")
        child = _forkserver.Process(target=_verify_in_child, args=(str(document), str(result), trust, limits,
                                                                  self._nice, self._memory_bytes),
                                    name="verifier", daemon=True)
        loop = asyncio.get_running_loop()
        try:
            # Starting asks the forkserver for a fork and waits for the pid: milliseconds, but
            # longer while the forkserver starts (the first time) and imports, so not on the event
            # loop's thread. Waited out even if the call is cancelled meanwhile: its pid would
            # otherwise be unknown below and the child left to run and leave its result file behind.
            await off_the_loop(_started, child)
            try:
                await asyncio.wait_for(_exit_of(child), deadline_seconds)
            except TimeoutError:
                cpu_seconds = _cpu_seconds(child.pid)
                if child.exitcode is not None:  # done just as the deadline came: its outcome stands
                    return _outcome(result, child.exitcode)
                raise refusal_past_deadline(cpu_seconds, deadline_seconds, limits) from None
            return _outcome(result, child.exitcode)
        finally:
            if child.pid is not None and child.exitcode is None:
                child.kill()
                await loop.run_in_executor(None, child.join)
            result.unlink(missing_ok=True)


def refusal_past_deadline(cpu_seconds: float | None, deadline_seconds: float,
                          limits: "VerificationLimits") -> SignServerError:
    """What the caller is told of a verification killed at its deadline, having had
    ``cpu_seconds`` of CPU (None: unknown). A child that had the verification's time limit in
    CPU was stopped by its document; one that had less waited for a CPU the server's other work
    kept (it runs in the idle class), and the same document may well be verified later: not
    sooner than another deadline's length, which the refusal suggests as its retry delay."""
    if cpu_seconds is not None and cpu_seconds < limits.max_seconds:
        return ServerBusy(f"the document was not verified within {deadline_seconds:g} s: the server's other work "
                          f"came first (the verification had {cpu_seconds:.1f} of its {limits.max_seconds:g} s "
                          "of CPU); try again later", retry_seconds=deadline_seconds)
    return InvalidArgument(f"verification exceeds {deadline_seconds:g} s; the document has too many "
                           "signatures, revisions or objects to verify here")


def _cpu_seconds(pid: int) -> float | None:
    """The CPU time process ``pid`` has had, from /proc (None where it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # after the command's name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, ValueError, IndexError):
        return None


def _started(child: multiprocessing.process.BaseProcess) -> None:
    start_forkserver()
    child.start()


async def _exit_of(child: multiprocessing.process.BaseProcess) -> None:
    """Wait, without a thread, for the child to exit (its sentinel becomes readable)."""
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(child.sentinel, lambda: exited.done() or exited.set_result(None))
    try:
        await exited
    finally:
        loop.remove_reader(child.sentinel)
    child.join()


def _outcome(result: Path, exitcode: int | None) -> "DocumentVerdict":
    try:
        kind, value = pickle.loads(result.read_bytes())
    except (OSError, EOFError, pickle.UnpicklingError):
        log.error("a verifier process exited with %s and left no result", exitcode)
        raise InvalidArgument("the document could not be verified: the verifier stopped on it") from None
    if kind == "verdict":
        return value
    if kind == "refused":
        raise InvalidArgument(value)
    log.error("a verifier process failed:\n%s", value)
    raise InvalidArgument("the document could not be verified: the verifier failed on it")


def _verify_in_child(document: str, result: str, trust, limits, nice: int, memory_bytes: int) -> None:
    """The child's work: verify, then leave the outcome in ``result`` (written with mode 0600)."""
    os.nice(nice)
    memory_bytes = _limit_memory(memory_bytes)
    try:
        # Linux's idle class: any waking thread of the worker preempts this child at once,
        # where a niced child may still finish its time slice first.
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux: the nice value alone
        pass
    logging.disable(logging.CRITICAL)  # pyHanko logs every untrusted chain with its traceback
    from signserver.pades.verification import verify_file

    started = time.process_time()  # the time limit counts the CPU a document takes, not the waits for it
    try:
        outcome = ("verdict", verify_file(document, trust, limits, elapsed=lambda: time.process_time() - started))
    except InvalidArgument as exc:
        outcome = ("refused", str(exc))
    except MemoryError:
        outcome = ("refused", f"verification needs more memory than {memory_bytes // (1 << 20)} MiB; "
                              "the document is too large or too deeply compressed to verify here")
    except Exception:  # reported to the worker, which logs it; the caller gets no details
        outcome = ("failed", traceback.format_exc())
    descriptor = os.open(result, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        pickle.dump(outcome, out)


def _limit_memory(memory_bytes: int) -> int:
    """Cap the child's address space at what it has mapped now plus ``memory_bytes``: beyond it,
    allocations fail with MemoryError. Returns what the child may allocate: less than
    ``memory_bytes`` when the data bound it inherited (the worker's, ``server.worker_memory_mb``)
    leaves less, so that a refusal names the bound that was reached."""
    try:
        with open("/proc/self/statm") as statm:
            fields = statm.read().split()
        mapped, data = (int(fields[i]) * os.sysconf("SC_PAGE_SIZE") for i in (0, 5))
    except (OSError, ValueError, IndexError):  # no /proc: the budget alone
        mapped = data = 0
    limit = mapped + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    data_bound, _ = resource.getrlimit(resource.RLIMIT_DATA)
    if data_bound != resource.RLIM_INFINITY:
        memory_bytes = min(memory_bytes, max(data_bound - data, 0))
    return memory_bytes
