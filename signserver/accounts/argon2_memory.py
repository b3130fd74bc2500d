"""argon2id evaluations whose work memory is kept between them, and returned when they stop.

An argon2id evaluation with the server's parameters works in 19 MiB. Workers have glibc serve
blocks that large with mmap (signserver/allocator.py), so that the memory goes back once freed;
but then each evaluation mapped 19 MiB afresh and the kernel faulted in and zeroed its 4,864
pages: 30.5 ms an evaluation against 19 ms in memory already mapped (medians of 40, one thread).
Here libargon2 gets its memory from :class:`WorkAreas`, which keeps the areas it lent while
evaluations keep coming and unmaps each once it has lain unused for ``idle_seconds``. libargon2
wipes an area before it hands it back, so what is kept holds nothing of a secret.

Areas are private anonymous mappings, and a forked child starts with none of its parent's.

An evaluation that finds no memory for its area (a worker near its RLIMIT_DATA bound,
signserver/grpc_api/worker_memory.py) or cannot start its threads is a fault of the server, not an
answer about the secret: it raises MemoryExhausted (ServerBusy for the threads), never a
HashingError that a caller could take for a hash that does not match.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
import time
import weakref

from argon2.exceptions import HashingError
from argon2.low_level import Type, core, error_to_str, ffi, lib

from signserver.argon2_faults import MEMORY, THREADS, fault_of_result
from signserver.errors import MemoryExhausted, ServerBusy

log = logging.getLogger(__name__)

IDLE_SECONDS = 2.0  # an area unused this long goes back to the system
MOST_KEPT = 8  # areas kept unused at most: about one per password-checking thread


class WorkAreas:
    """Memory areas lent to libargon2, kept for reuse while evaluations keep coming. Thread-safe."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS, most_kept: int = MOST_KEPT):
        self._idle_seconds = idle_seconds
        self._most_kept = most_kept
        self._lock = threading.Lock()
        self._lent: dict[int, tuple[mmap.mmap, object]] = {}  # by address: the area and its C view
        self._unused: list[tuple[float, int, mmap.mmap]] = []  # (since, size, area), newest last
        self._sweep: threading.Timer | None = None
        self.mapped = 0  # areas mapped so far: each one memory the kernel had to fault in afresh
        myself = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (areas := myself()) is not None and areas._forget_inherited())

    def lend(self, size: int):
        """An area of ``size`` bytes for libargon2 (a ``uint8_t *``), reused if one is unused.

        Raises: OSError: the system has no memory to map."""
        with self._lock:
            for index in range(len(self._unused) - 1, -1, -1):
                if self._unused[index][1] == size:
                    area = self._unused.pop(index)[2]
                    break
            else:
                area = None
        fresh = area is None
        if fresh:
            area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        view = ffi.from_buffer("uint8_t[]", area)
        with self._lock:
            self._lent[int(ffi.cast("uintptr_t", view))] = (area, view)
            self.mapped += fresh
        return view

    def take_back(self, address: int, size: int) -> None:
        """The area at ``address`` is no longer used (libargon2 wiped it first)."""
        with self._lock:
            area = self._lent.pop(address)[0]  # its C view goes with the entry: the area can be closed
            self._unused.append((time.monotonic(), size, area))
            surplus = self._unused[:max(0, len(self._unused) - self._most_kept)]  # the oldest
            del self._unused[:len(surplus)]
            if self._sweep is None:
                self._sweep = _daemon_timer(self._idle_seconds, self._sweep_idle)
            _unmap(surplus)

    def release_unused(self) -> None:
        """Unmap every area kept unused now, as the sweep does once they lie idle (a process about
        to lower its bound on its memory; tests)."""
        with self._lock:
            unused, self._unused = self._unused, []
            _unmap(unused)

    def kept(self) -> int:
        """How many areas are kept unused now: an area leaves the count once it is unmapped."""
        with self._lock:
            return len(self._unused)

    def _sweep_idle(self) -> None:
        """Unmap the areas unused for ``idle_seconds``; look again when the next one will be."""
        now = time.monotonic()
        cutoff = now - self._idle_seconds
        with self._lock:
            idle = [entry for entry in self._unused if entry[0] <= cutoff]
            self._unused = [entry for entry in self._unused if entry[0] > cutoff]
            self._sweep = None
            if self._unused:
                next_idle = min(since for since, _size, _area in self._unused) + self._idle_seconds
                self._sweep = _daemon_timer(max(0.01, next_idle - now), self._sweep_idle)
            _unmap(idle)  # last: should one fail, the areas kept and the next sweep stand

    def _forget_inherited(self) -> None:
        """In a forked child: the parent's areas and timer are not this process's to use."""
        self._lock = threading.Lock()
        self._lent, self._unused, self._sweep = {}, [], None


def _unmap(entries: list[tuple[float, int, mmap.mmap]]) -> None:
    """Unmap the areas of ``entries``. Called holding the lock, so that nobody counts an area gone
    while the kernel is still unmapping it (a millisecond or so for 19 MiB); an evaluation that
    starts meanwhile waits that long, which happens only after areas lay idle or in surplus."""
    for _since, _size, area in entries:
        area.close()


def _daemon_timer(seconds: float, function) -> threading.Timer:
    timer = threading.Timer(seconds, function)
    timer.daemon = True
    timer.start()
    return timer


_AREAS = WorkAreas()
ARGON2_MEMORY_ALLOCATION_ERROR = lib.ARGON2_MEMORY_ALLOCATION_ERROR


@ffi.callback("int(uint8_t **, size_t)", error=ARGON2_MEMORY_ALLOCATION_ERROR)
def _allocate(memory, size):
    try:
        memory[0] = _AREAS.lend(size)
    except (OSError, MemoryError):
        return ARGON2_MEMORY_ALLOCATION_ERROR
    return lib.ARGON2_OK


@ffi.callback("void(uint8_t *, size_t)")
def _free(memory, size):
    _AREAS.take_back(int(ffi.cast("uintptr_t", memory)), size)


def argon2id_raw(secret: bytes, salt: bytes, *, time_cost: int, memory_kib: int, parallelism: int,
                 hash_len: int) -> bytes:
    """The raw argon2id output, as ``argon2.low_level.hash_secret_raw`` computes it, in memory
    lent by the process's :class:`WorkAreas`.

    Raises:
        argon2.exceptions.HashingError: parameters libargon2 refuses (a malformed stored hash's).
        MemoryExhausted: no memory for the work area (ENOMEM, as near the worker's RLIMIT_DATA).
        ServerBusy: libargon2 could not start its threads (``parallelism`` above 1).
    """
    out = ffi.new("uint8_t[]", hash_len)
    secret_buffer, salt_buffer = ffi.new("uint8_t[]", secret), ffi.new("uint8_t[]", salt)
    context = ffi.new("argon2_context *", dict(
        version=lib.ARGON2_VERSION_NUMBER, out=out, outlen=hash_len,
        pwd=secret_buffer, pwdlen=len(secret), salt=salt_buffer, saltlen=len(salt),
        secret=ffi.NULL, secretlen=0, ad=ffi.NULL, adlen=0,
        t_cost=time_cost, m_cost=memory_kib, lanes=parallelism, threads=parallelism,
        allocate_cbk=_allocate, free_cbk=_free, flags=lib.ARGON2_DEFAULT_FLAGS))
    result = core(context, Type.ID.value)  # libargon2 checks every parameter itself
    if result != lib.ARGON2_OK:
        raise resource_fault(fault_of_result(result), memory_kib) or HashingError(error_to_str(result))
    return bytes(ffi.buffer(out, hash_len))


def resource_fault(fault: str | None, memory_kib: int | None = None) -> ServerBusy | None:
    """The refusal for a ``fault`` of signserver.argon2_faults (the process lacked memory or a
    thread), logged at WARNING; None for no fault (parameters libargon2 refuses, a mismatch)."""
    if fault == MEMORY:
        area = f"its {memory_kib} KiB work area" if memory_kib else "its work area"
        log.warning("an argon2id evaluation found no memory for %s (the worker near its memory bound?): "
                    "refused with MemoryExhausted, not as a wrong secret", area)
        return MemoryExhausted("the server has no memory left to check or hash a password now; the request is "
                               "refused and counts against no account: try again shortly")
    if fault == THREADS:
        log.warning("an argon2id evaluation could not start its threads: refused with ServerBusy, not as a wrong "
                    "secret")
        return ServerBusy("the server cannot start the threads to check or hash a password now; the request is "
                          "refused and counts against no account: try again shortly")
    return None


def work_areas() -> WorkAreas:
    """The process's areas (for its tests and figures)."""
    return _AREAS
