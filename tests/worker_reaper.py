"""The parent of each pytest-xdist worker process: ``python tests/worker_reaper.py ARGS`` runs
``python ARGS`` (the worker, on the execnet channel it inherits) as its child and, should the
worker end abruptly (a signal such as the kernel's out-of-memory killer's SIGKILL, or a failing
exit status), stops every process the worker had started before ending as the worker did.

Why: the servers, commands, fork server and PostgreSQL cluster a worker starts outlived it when it
was killed (nothing of its own can run after a SIGKILL), and a process forked from it without an
exec (a test's ``os.fork``, multiprocessing's fork context) keeps the worker's end of the execnet
pipes open: xdist's controller sees the worker's death only when the pipe closes, so while such a
process lived the whole run waited. This process is a child subreaper (prctl): whatever the worker
started, however many forks deep or in whatever session, is its descendant, and comes to it when
its own parent ends. It holds none of the channel itself (its standard input and output go to
/dev/null once the worker has them), ignores the terminal's Ctrl-C (the worker's to answer), and
what it says goes to standard error, which xdist's workers share with the run's output.

A process that a descendant marks with ``SPARED_ENVIRONMENT`` in its environment is left to end by
itself: the PostgreSQL cluster's watchdog, which stops the worker's cluster and removes its
directory once the worker is gone.

Standard library only: it starts before each worker, and again for a worker xdist replaces."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
SPARED_ENVIRONMENT = b"SIGNSERVER_TESTS_REAPER_SPARES=1"
TERM_GRACE_SECONDS = 5.0  # between SIGTERM and SIGKILL: servers stop their own workers on SIGTERM


def main(arguments: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        # Without it orphans go to init and cannot be found: run the worker all the same.
        os.execv(sys.executable, [sys.executable, *arguments])
    # The worker dies with this process (execnet kills it when the worker does not end at the
    # run's end), as it did when execnet killed it directly.
    worker = subprocess.Popen([sys.executable, *arguments],
                              preexec_fn=lambda: libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _forward(signal.SIGTERM, worker.pid)
    _release_channel()
    status = _wait_for(worker.pid)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        stopped = _stop_descendants()
        _report(worker.pid, code, stopped)
    if code < 0:  # end as the worker did, so that xdist's controller sees the same status
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code if code > 0 else 1


def _forward(signum: int, pid: int) -> None:
    signal.signal(signum, lambda *_: os.kill(pid, signum))


def _release_channel() -> None:
    """Standard input and output to /dev/null: only the worker holds the execnet pipes."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)


def _wait_for(pid: int) -> int:
    """The wait status of ``pid``, reaping meanwhile the orphans adopted (PostgreSQL's server once
    pg_ctl has ended, a fork server's handlers)."""
    while True:
        try:
            ended, status = os.wait()
        except ChildProcessError:
            raise RuntimeError(f"the worker {pid} is not a child of this process") from None
        if ended == pid:
            return status


def _stop_descendants() -> list[str]:
    """SIGTERM to every descendant but the spared ones, SIGKILL to those left after
    TERM_GRACE_SECONDS, until none is left; returns what was stopped (pid and command)."""
    stopped: dict[int, str] = {}
    deadline = time.monotonic() + TERM_GRACE_SECONDS
    signum = signal.SIGTERM
    while True:
        _reap()
        remaining = [pid for pid in _descendants(os.getpid()) if not _spared(pid)]
        if not remaining:
            return [f"{command} (pid {pid})" for pid, command in stopped.items()]
        if time.monotonic() >= deadline:
            signum = signal.SIGKILL
        for pid in remaining:
            stopped.setdefault(pid, _command(pid))
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _descendants(root: int) -> list[int]:
    """The living (not zombie) descendants of ``root``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, pending = [], list(children.get(root, ()))
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, ()))
    return found


def _spared(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return SPARED_ENVIRONMENT in environ.read().split(b"\0")
    except OSError:
        return False


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            words = cmdline.read().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(word.decode(errors="replace") for word in words if word)
    return text if len(text) <= 100 else text[:97] + "..."


def _report(pid: int, code: int, stopped: list[str]) -> None:
    if code < 0:
        name = signal.Signals(-code).name
        how = f"was killed by {name}" + (" (as the kernel's out-of-memory killer kills: see dmesg)"
                                          if -code == signal.SIGKILL else "")
    else:
        how = f"ended with status {code}"
    lines = [f"\nthe test worker process {pid} {how}"]
    if stopped:
        lines.append(f"; stopped the {len(stopped)} processes it had started:")
        lines.extend(f"\n    {command}" for command in stopped)
    sys.stderr.write("".join(lines) + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
