"""BlockingCalls: which thread a call runs on, so that short signing calls skip the hand-over
to a thread only when nothing can keep the event loop waiting."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from signserver.blocking_calls import BlockingCalls, calling_for
from signserver.errors import DeadlineExceeded, ServerBusy, ServerStopping
from signserver.hsm.module import pkcs11_lock, pkcs11_lock_is_free

pytestmark = pytest.mark.one_store  # touches no store


def run_on_loop(scenario, drain_wait: float = 10.0) -> tuple[int, int]:
    """Run ``scenario(calls)`` on a fresh event loop; returns (loop thread, thread the call ran on)."""
    async def main() -> tuple[int, int]:
        calls = BlockingCalls("test", threads=2, free_now=pkcs11_lock_is_free, drain_wait=drain_wait)
        try:
            return threading.get_ident(), await scenario(calls)
        finally:
            calls.shutdown()
    return asyncio.run(main())


@contextmanager
def hsm_held_by_another_thread() -> Iterator[Callable[[], None]]:
    """Another thread in the HSM (a key being generated, say) until the block ends or it is let go
    through the function yielded."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with pkcs11_lock():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        yield release.set
    finally:
        release.set()
        holder.join(10)


def signing_thread() -> int:
    with pkcs11_lock():  # as every HSM call does
        return threading.get_ident()


def test_a_short_call_runs_on_the_loop_when_the_hsm_is_free():
    async def scenario(calls: BlockingCalls) -> int:
        return await calls.run_short(signing_thread)

    loop_thread, ran_on = run_on_loop(scenario)
    assert ran_on == loop_thread


def test_a_short_call_goes_to_the_pool_while_another_thread_holds_the_hsm():
    with hsm_held_by_another_thread() as let_go:
        async def scenario(calls: BlockingCalls) -> int:
            call = asyncio.ensure_future(calls.run_short(signing_thread))
            await asyncio.sleep(0.1)  # the loop goes on serving meanwhile
            assert not call.done()
            let_go()
            return await call

        loop_thread, ran_on = run_on_loop(scenario)
    assert ran_on != loop_thread


def test_a_short_call_waits_for_the_pool_to_drain_then_runs_on_the_loop():
    # Joining the pool's queue instead would keep every later call on threads for as long as
    # calls overlap: the hand-over paid on most calls of a busy server.
    async def scenario(calls: BlockingCalls) -> int:
        busy = threading.Event()
        earlier = asyncio.ensure_future(calls.run(busy.wait, 10))
        await asyncio.sleep(0.05)
        short = asyncio.ensure_future(calls.run_short(signing_thread))
        await asyncio.sleep(0.1)
        assert not short.done()  # it waits while the pool is busy, and the loop goes on serving
        busy.set()
        await earlier
        return await short

    loop_thread, ran_on = run_on_loop(scenario)
    assert ran_on == loop_thread


def test_a_short_call_joins_the_pool_when_it_does_not_drain_in_time():
    async def scenario(calls: BlockingCalls) -> int:
        busy = threading.Event()
        earlier = asyncio.ensure_future(calls.run(busy.wait, 10))
        await asyncio.sleep(0.05)
        try:
            return await calls.run_short(signing_thread)
        finally:
            busy.set()
            await earlier

    loop_thread, ran_on = run_on_loop(scenario, drain_wait=0.05)
    assert ran_on != loop_thread


def test_the_lock_probe_reports_a_held_lock_and_leaves_a_free_one_free():
    assert pkcs11_lock_is_free()
    assert pkcs11_lock().acquire(blocking=False)  # the probe released what it took
    pkcs11_lock().release()
    with hsm_held_by_another_thread():
        assert not pkcs11_lock_is_free()
    assert pkcs11_lock_is_free()


class Caller:
    """A caller that gives up when told to; its check may run on any thread."""

    def __init__(self):
        self.gave_up = threading.Event()

    def check(self) -> None:
        if self.gave_up.is_set():
            raise DeadlineExceeded("the call's deadline passed before its turn came; nothing was done")


def test_a_call_whose_caller_gave_up_while_it_queued_is_not_started():
    started = []

    async def scenario(calls: BlockingCalls) -> int:
        busy, caller = threading.Event(), Caller()
        ahead = [asyncio.ensure_future(calls.run(busy.wait, 10)) for _ in range(2)]  # both threads
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(calls.run(started.append, "queued", caller_check=caller.check))
        await asyncio.sleep(0.05)
        # The caller gives up, and its turn comes, before the loop hears of it.
        caller.gave_up.set()
        busy.set()
        await asyncio.gather(*ahead)
        with pytest.raises(DeadlineExceeded):
            await queued
        return 0

    run_on_loop(scenario)
    assert started == []


def test_a_short_call_whose_caller_gave_up_is_not_started_on_the_loop():
    started = []

    async def scenario(calls: BlockingCalls) -> int:
        caller = Caller()
        caller.gave_up.set()
        with pytest.raises(DeadlineExceeded):
            await calls.run_short(started.append, "short", caller_check=caller.check)
        assert await calls.run_short(started.append, "wanted", caller_check=lambda: None) is None
        return 0

    run_on_loop(scenario)
    assert started == ["wanted"]


def test_once_stopping_calls_not_yet_started_are_refused_and_those_under_way_finish():
    started = []

    async def scenario(calls: BlockingCalls) -> int:
        busy = threading.Event()

        def under_way(name: str) -> str:
            started.append(name)
            busy.wait(10)
            return name

        ahead = [asyncio.ensure_future(calls.run(under_way, f"under way {i}")) for i in range(2)]  # both threads
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(calls.run(started.append, "queued"))
        continuing = asyncio.ensure_future(calls.run(started.append, "continuing", continues_work=True))
        await asyncio.sleep(0.05)
        calls.stop_starting()
        busy.set()
        assert await asyncio.gather(*ahead) == ["under way 0", "under way 1"]
        with pytest.raises(ServerStopping):
            await queued
        await continuing
        with pytest.raises(ServerStopping):
            await calls.run(started.append, "new")
        with pytest.raises(ServerStopping):
            await calls.run_short(started.append, "new short")
        return 0

    run_on_loop(scenario)
    assert started == ["under way 0", "under way 1", "continuing"]


def calls_for(caller: str, calls: BlockingCalls, function, count: int) -> list[asyncio.Task]:
    """``count`` calls of ``function`` made for ``caller``, each in a task of its own (as each
    request of a front is), in order."""
    async def one(index: int):
        calling_for.set(caller)
        return await calls.run(function, f"{caller}-{index}")
    return [asyncio.create_task(one(index)) for index in range(count)]


def test_callers_take_turns_for_the_threads_each_in_the_order_of_its_calls():
    started: list[str] = []
    gate = threading.Event()

    def work(name: str) -> str:
        started.append(name)
        gate.wait(10)  # the first call holds the one thread until every call is queued
        return name

    async def scenario() -> None:
        calls = BlockingCalls("test", threads=1)
        try:
            flood = calls_for("flooder", calls, work, 10)
            await asyncio.sleep(0.1)  # the flooder's first call has the thread, the others wait
            other = calls_for("other", calls, work, 2)
            await asyncio.sleep(0.1)
            gate.set()
            await asyncio.gather(*flood, *other)
        finally:
            calls.shutdown()

    asyncio.run(scenario())
    # One in turn: the other caller's calls are not queued behind the flooder's nine waiting ones.
    assert started[:5] == ["flooder-0", "flooder-1", "other-0", "flooder-2", "other-1"]
    assert started[5:] == [f"flooder-{n}" for n in range(3, 10)]


def test_one_caller_is_refused_beyond_its_share_of_the_waiting_places_and_others_still_get_in():
    gate = threading.Event()

    def work(name: str) -> str:
        gate.wait(10)
        return name

    async def scenario() -> tuple[list, list]:
        calls = BlockingCalls("test", threads=1, max_waiting=8)  # one caller: 1 thread + 2 waiting
        try:
            flood = calls_for("flooder", calls, work, 5)
            await asyncio.sleep(0.1)
            other = calls_for("other", calls, work, 3)
            await asyncio.sleep(0.1)
            gate.set()
            return (await asyncio.gather(*flood, return_exceptions=True),
                    await asyncio.gather(*other, return_exceptions=True))
        finally:
            calls.shutdown()

    flooded, others = asyncio.run(scenario())
    assert flooded[:3] == ["flooder-0", "flooder-1", "flooder-2"]
    assert all(isinstance(refused, ServerBusy) and "this application" in str(refused) for refused in flooded[3:])
    assert others == ["other-0", "other-1", "other-2"]


def test_a_call_cancelled_while_it_waits_for_its_turn_leaves_its_place_to_the_next():
    started: list[str] = []
    gate = threading.Event()

    def work(name: str) -> str:
        started.append(name)
        gate.wait(10)
        return name

    async def scenario() -> list:
        calls = BlockingCalls("test", threads=1)
        try:
            first = calls_for("a", calls, work, 1)
            await asyncio.sleep(0.1)
            waiting = calls_for("b", calls, work, 1) + calls_for("c", calls, work, 1)
            await asyncio.sleep(0.1)
            waiting[0].cancel()
            await asyncio.sleep(0.05)
            gate.set()
            results = await asyncio.gather(*first, *waiting, return_exceptions=True)
            assert calls.pending == 0
            return results
        finally:
            calls.shutdown()

    results = asyncio.run(scenario())
    assert results[0] == "a-0" and isinstance(results[1], asyncio.CancelledError) and results[2] == "c-0"
    assert started == ["a-0", "c-0"]
