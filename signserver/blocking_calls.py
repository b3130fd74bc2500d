"""BlockingCalls: where blocking work runs while an event loop (gRPC's or HTTP's) keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import AsyncIterator, Callable, Hashable, TypeVar

from signserver.errors import ServerBusy, ServerStopping
from signserver.monitoring.meter import meter
from signserver.outlasting import outlast

T = TypeVar("T")

CallerCheck = Callable[[], None]
"""Raises CallerGaveUp (DeadlineExceeded when the caller's deadline passed) once the caller no
longer waits for the answer; returns otherwise. Safe to call from any thread."""

# How long a short call waits for the pool to drain before it joins the pool's queue: a few
# RSA-2048 signatures' time.
SHORT_CALL_DRAIN_SECONDS = 0.005

calling_for: ContextVar[Hashable] = ContextVar("calling_for", default=None)
"""Whom the calls of the current request are made for: the fronts set the calling application's
id once they know it (None before, and for the server's own work). A pool starts its waiting calls
one caller after another, so that one application's burst waits behind itself, not in front of
every other application's calls."""


class BlockingCalls:
    """A small thread pool where blocking calls into the service run.

    The server keeps three: one for calls that only reach the HSM (PKCS#11 calls are serialised by
    the process-wide lock anyway, so a burst queues here in order instead of piling up threads),
    one for calls that check passwords (argon2 is slow on purpose and memory-hungry, so a flood of
    logins is bounded by this pool and cannot starve signing), and one for document work (PDF
    parsing and writing take tens to hundreds of milliseconds per document, so they never sit in
    the queue ahead of a SignHash).
    """

    def __init__(self, name: str, threads: int, max_waiting: int = 256,
                 free_now: Callable[[], bool] = lambda: False, drain_wait: float = SHORT_CALL_DRAIN_SECONDS):
        """``max_waiting``: calls that may wait for a thread, of which a quarter may be one
        caller's (:data:`calling_for`)."""
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._free_now = free_now
        self._drain_wait = drain_wait
        self._name = name
        self._threads = threads
        self._limit = threads + max_waiting
        self._caller_limit = threads + max(1, max_waiting // 4)
        # Only touched from the event loop's thread:
        self._pending = 0
        self._pending_by_caller: dict[Hashable, int] = {}
        self._in_threads = 0  # calls handed to the threads and not yet ended: at most ``threads``
        # Calls waiting for a thread, by caller; the callers in the order of their turns.
        self._turns: dict[Hashable, deque[asyncio.Future[None]]] = {}
        self._stopping = threading.Event()  # read in the pool's threads too
        self._drained = asyncio.Event()  # set while nothing is pending
        self._drained.set()

    async def run(self, function: Callable[..., T], *args, caller_check: CallerCheck | None = None,
                  continues_work: bool = False, **kwargs) -> T:
        """Run ``function`` in the pool.

        With ``caller_check``, a call whose caller gave up (its deadline passed, it cancelled)
        before its turn is not started: the check runs again in the pool's thread just before
        ``function``, because the news that the caller went away reaches the event loop only
        when the loop gets to it, and the pool may start the call first.

        If the caller is cancelled (its client went away) while ``function`` runs, this still
        waits for ``function`` to end before raising CancelledError: the limits and files the
        caller holds are held until the thread is free again, so a client cannot keep threads
        busy by starting and cancelling calls. A call not yet started is dropped at once.

        ``continues_work``: the request already did what cannot be undone (checked a holder's
        factors, issued an activation token) and this call finishes it: it runs even after
        :meth:`stop_starting`.

        Calls wait for a thread in turns: each caller's oldest call (see :data:`calling_for`),
        one caller after another.

        Raises: what ``function`` raises; ServerBusy: more calls are waiting than the pool takes,
        or than one caller may have waiting (a flood of logins is refused at once instead of
        queueing without bound);
        ServerStopping: :meth:`stop_starting` was called before ``function`` started;
        asyncio.CancelledError: the caller was cancelled; CallerGaveUp, DeadlineExceeded: from
        ``caller_check``, and ``function`` was not started.
        """
        stopping_refuses = not continues_work
        self._check_before_start(caller_check, stopping_refuses)
        caller = calling_for.get()
        if self._pending >= self._limit:
            raise ServerBusy(f"the server is busy ({self._name}); try again shortly")
        if self._pending_by_caller.get(caller, 0) >= self._caller_limit:
            raise ServerBusy(f"the server is busy ({self._name}): this application has "
                             f"{self._caller_limit} calls under way or waiting here; try again shortly")
        self._pending += 1
        self._pending_by_caller[caller] = self._pending_by_caller.get(caller, 0) + 1
        self._drained.clear()
        meter().blocking_calls_pending(self._name, self._pending, self._threads)
        try:
            await self._thread_turn(caller)
            try:
                submitted = self._pool.submit(self._checked, caller_check,
                                              functools.partial(function, *args, **kwargs), stopping_refuses)
                running = asyncio.wrap_future(submitted)
                try:
                    return await asyncio.shield(running)
                except asyncio.CancelledError:
                    if not submitted.cancel():
                        await outlast(running)
                    raise
            finally:
                self._next_turn()
        finally:
            self._pending -= 1
            left = self._pending_by_caller[caller] - 1
            if left:
                self._pending_by_caller[caller] = left
            else:
                del self._pending_by_caller[caller]
            if self._pending == 0:
                self._drained.set()
            meter().blocking_calls_pending(self._name, self._pending, self._threads)

    async def _thread_turn(self, caller: Hashable) -> None:
        """Return once a thread is free for this call and it is its caller's turn. A call
        cancelled while it waits leaves its place (and passes on a turn it was just given).

        Raises: asyncio.CancelledError.
        """
        if self._in_threads < self._threads and not self._turns:
            self._in_threads += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._turns.setdefault(caller, deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._next_turn()  # given its thread as it was cancelled: the next call takes it
            else:
                waiting = self._turns.get(caller)
                if waiting is not None and turn in waiting:
                    waiting.remove(turn)
                    if not waiting:
                        del self._turns[caller]
            raise

    def _next_turn(self) -> None:
        """A call's thread is free: the caller whose turn it is starts its oldest waiting call,
        and goes to the back of the round."""
        self._in_threads -= 1
        while self._turns and self._in_threads < self._threads:
            caller, waiting = next(iter(self._turns.items()))
            turn = waiting.popleft()
            del self._turns[caller]
            if waiting:
                self._turns[caller] = waiting
            if not turn.done():  # a cancelled one is skipped
                turn.set_result(None)
                self._in_threads += 1

    async def run_short(self, function: Callable[..., T], *args, caller_check: CallerCheck | None = None,
                        **kwargs) -> T:
        """Run a call known to be short (a few signatures: about 2 ms at most) on the event
        loop's own thread when nothing should make it wait there: no call of this pool is under
        way and ``free_now()`` says so (for the HSM pool: no thread holds the PKCS#11 lock, so
        no key generation is running). Otherwise, as :meth:`run`.

        Handing a call to a thread and back costs about 0.1 ms of CPU, a quarter of an RSA-2048
        signature: for single signatures, throughput lost on a busy server. The loop still waits,
        like any writer, for its turn at the database, which others hold for moments.

        Raises: what ``function`` raises; ServerBusy, ServerStopping, CallerGaveUp,
        DeadlineExceeded, as :meth:`run`.
        """
        if self._pending:
            # Wait for the pool to drain instead of joining its queue: once one short call has
            # gone to a thread (a health check held the HSM), every call arriving while it runs
            # would follow it, and the server would pay the hand-over on most calls for good.
            # Bounded, so that a steady stream of long calls cannot hold short ones back.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self._drain_wait)
        if self._pending == 0 and self._free_now():
            return self._checked(caller_check, functools.partial(function, *args, **kwargs))
        return await self.run(function, *args, caller_check=caller_check, **kwargs)

    @property
    def pending(self) -> int:
        """The calls queued or under way in the pool now (from another thread: a snapshot)."""
        return self._pending

    def stop_starting(self) -> None:
        """From now on, refuse every call not yet started, those already queued included: a
        stopping server then waits only for the work under way, and the callers refused
        (ServerStopping) try again elsewhere at once, with nothing done, instead of having their
        work started late and cut off by the end of the stop's grace. Safe from any thread."""
        self._stopping.set()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _check_before_start(self, caller_check: CallerCheck | None, stopping_refuses: bool = True) -> None:
        """Raises: ServerStopping; CallerGaveUp, DeadlineExceeded: from ``caller_check``."""
        if stopping_refuses and self._stopping.is_set():
            raise ServerStopping(f"the server is stopping ({self._name}); try again")
        if caller_check is not None:
            caller_check()

    def _checked(self, caller_check: CallerCheck | None, call: Callable[[], T], stopping_refuses: bool = True) -> T:
        """Raises: ServerStopping, CallerGaveUp, DeadlineExceeded (``call`` not started); what
        ``call`` raises."""
        self._check_before_start(caller_check, stopping_refuses)
        return call()


class FairShares:
    """At most ``per_key`` calls of one key (an application) at once; the others wait their turn
    here, so that one application's burst of documents cannot take every thread of a pool.

    Waiting is bounded upstream: a key has only so many document streams open at once.
    Only touched from the event loop's thread.
    """

    def __init__(self, per_key: int):
        self._per_key = per_key
        self._semaphores: dict[Hashable, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, key: Hashable) -> AsyncIterator[None]:
        semaphore, users = self._semaphores.get(key) or (asyncio.Semaphore(self._per_key), 0)
        self._semaphores[key] = (semaphore, users + 1)
        try:
            async with semaphore:
                yield
        finally:
            semaphore, users = self._semaphores[key]
            if users == 1:
                del self._semaphores[key]
            else:
                self._semaphores[key] = (semaphore, users - 1)
