"""The SQLite writer lock excludes threads and processes alike, and is re-entrant in a thread."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from signserver.store.writer_lock import WriterLock

pytestmark = pytest.mark.sqlite_only

_fork = multiprocessing.get_context("fork")


def bump(lock: WriterLock, counter, times: int) -> None:
    """Read-modify-write of a file, slowly: without exclusion, updates get lost."""
    for _ in range(times):
        with lock.held():
            value = int(counter.read_text())
            time.sleep(0.0005)
            counter.write_text(str(value + 1))


def test_processes_and_threads_take_turns(tmp_path):
    counter = tmp_path / "counter"
    counter.write_text("0")
    lock = WriterLock(tmp_path / "db-writer.lock")
    with lock.held():  # the parent holds it while forking: the children must still wait their turn
        children = [_fork.Process(target=bump, args=(lock, counter, 30)) for _ in range(3)]
        for child in children:
            child.start()
        time.sleep(0.2)
        assert counter.read_text() == "0"
    threads = [threading.Thread(target=bump, args=(lock, counter, 30)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    assert counter.read_text() == str(5 * 30)


def test_reentrant_in_one_thread(tmp_path):
    lock = WriterLock(tmp_path / "db-writer.lock")
    with lock.held():
        with lock.held():
            pass
        other = _fork.Process(target=bump, args=(lock, tmp_path / "never", 1))
        other.start()
        other.join(0.3)
        assert other.is_alive()  # still held by the outer block
    other.join(10)
    assert other.exitcode != 0  # it got the lock, then found no counter file
