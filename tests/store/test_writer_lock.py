"""The SQLite writer lock excludes threads and processes alike, and is re-entrant in a thread."""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import threading
import time

import pytest

from signserver.store.database import Database
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


def open_descriptors_of(path) -> list[int]:
    """This process's descriptors open on ``path``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                found.append(int(fd))
        except OSError:
            continue  # the listing's own descriptor, closed since
    return found


def test_a_lock_that_goes_closes_its_file(tmp_path):
    path = tmp_path / "db-writer.lock"
    lock = WriterLock(path)
    with lock.held():
        assert len(open_descriptors_of(path)) == 1
    del lock
    gc.collect()
    assert open_descriptors_of(path) == []


def test_a_database_dropped_keeps_no_writer_lock_open(tmp_path):
    """A process that opens databases one after another (a command, a test run) holds no
    descriptor of those it dropped."""
    for n in range(3):
        database = Database(f"sqlite:///{tmp_path / f'{n}.db'}")
        with database.transaction() as conn:
            conn.exec_driver_sql("CREATE TABLE entries (n INTEGER)")
        database.engine.dispose()
        del database
    gc.collect()
    assert [open_descriptors_of(tmp_path / f"{n}.db-writer.lock") for n in range(3)] == [[], [], []]


def test_a_forked_child_closes_the_inherited_file_and_opens_its_own(tmp_path):
    path = tmp_path / "db-writer.lock"
    lock = WriterLock(path)
    with lock.held():
        inherited = open_descriptors_of(path)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: reports its descriptors on the file before and after taking the lock
        try:
            os.close(reader)
            before = open_descriptors_of(path)
            with lock.held():
                during = open_descriptors_of(path)
            os.write(writer, json.dumps([before, len(during)]).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as report:
        before, during = json.loads(report.read())
    os.waitpid(pid, 0)
    assert len(inherited) == 1
    assert before == [] and during == 1
    assert open_descriptors_of(path) == inherited  # the parent's own is untouched
