"""Spool files for streamed documents, opened only once there is something to put in them, in
a folder of the process's own that outlives it only until the next sweep.

A file with no name (TemporaryFile) goes with its process, however it ends; a named one (a
VerifyPdf upload, which the verification's child process opens by name) is removed only when
closed, so a worker killed by SIGKILL (the kernel's OOM killer) left each upload it was taking
in, up to the document size limit, for good. So each process spools into a folder of its own,
``worker-<pid>-<random>`` under the spool directory, held by a lock (flock) on the folder for as
long as the process lives: the kernel releases it however the process ends. No other process
keeps it: a forked child closes its copy, and the verification's children come from a
forkserver started afresh, which inherits none. :func:`sweep` removes every folder whose lock it
can take, never a live process's; each worker sweeps as it starts, which includes every restart
of a worker that died.

A file system that refuses a spool file (full, over its quota, read-only, not writable by the
server) refuses the call with SpoolUnavailable (UNAVAILABLE), said in the log once a minute (see
signserver.pades.pending.refused_write); the file is closed and removed at once.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO

from signserver.descriptors import DescriptorReserve
from signserver.errors import ServerBusy, SignServerError, SpoolUnavailable
from signserver.grpc_api.stream_limits import check_descriptors
from signserver.outlasting import off_the_loop
from signserver.pades.pending import refused_write

log = logging.getLogger(__name__)

# Pieces at least this large are written in a thread; smaller ones cost less than the hand-over
# (about 0.1 ms).
OFF_THE_LOOP_BYTES = 64 * 1024
FOLDER_PREFIX = "worker-"
# Named spool files as earlier versions left them, loose in the spool directory.
LOOSE_PREFIX = "spool-"
# A sweep that takes a folder as it is made (between its creation and its lock) makes its maker
# try another; more than a few in a row would be sweeps starting without end.
CLAIM_ATTEMPTS = 5

_held: dict[Path, tuple[Path, int]] = {}  # spool directory -> (this process's folder, its locked descriptor)
_holding = threading.Lock()


def _forget_in_child() -> None:
    """In a forked child: its parent's folders are not its own. Their descriptors are closed (the
    lock stays with the parent, which keeps its own descriptor) so that the child's life does not
    keep them from a sweep once the parent is gone."""
    global _holding
    _holding = threading.Lock()  # another thread may have held it at the fork
    for _, descriptor in _held.values():
        try:
            os.close(descriptor)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def process_folder(spool: Path) -> Path:
    """This process's folder under ``spool``, made and locked at its first use (and again if it
    went away, or after a fork: a forked child's folder is its own).

    Raises: ServerBusy: the folder could not be made (sweeps kept taking it as it was made);
        SpoolUnavailable: the file system refused it.
    """
    try:
        return _process_folder(spool)
    except OSError as exc:
        raise refused_write(exc, spool) from exc


def _process_folder(spool: Path) -> Path:
    """As :func:`process_folder`. Raises: ServerBusy; OSError."""
    with _holding:
        pid = os.getpid()
        held = _held.get(spool)
        if held is not None:
            if held[0].is_dir():
                return held[0]
            os.close(held[1])  # the folder went away (removed by hand): its lock guards nothing
            del _held[spool]
        spool.mkdir(parents=True, exist_ok=True)
        for _ in range(CLAIM_ATTEMPTS):
            folder = Path(tempfile.mkdtemp(dir=spool, prefix=f"{FOLDER_PREFIX}{pid}-"))
            descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                made = os.fstat(descriptor)
                there = os.stat(folder)
            except (BlockingIOError, FileNotFoundError):
                os.close(descriptor)  # a sweep took it in between: it removes it
                continue
            if (made.st_dev, made.st_ino) != (there.st_dev, there.st_ino):
                os.close(descriptor)
                continue
            _held[spool] = (folder, descriptor)
            return folder
    raise ServerBusy("the spool directory is being swept: try again")


def sweep(spool: Path) -> int:
    """Remove the spool folders of processes that have ended, and named spool files that earlier
    versions left loose in ``spool``; returns how many were removed. A folder whose lock is held
    (its process lives, this one included) is left alone."""
    try:
        entries = list(os.scandir(spool))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    removed = 0
    for entry in entries:
        try:
            if entry.name.startswith(FOLDER_PREFIX) and entry.is_dir(follow_symlinks=False):
                removed += _remove_if_unheld(entry.path)
            elif entry.name.startswith(LOOSE_PREFIX) and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue  # another sweep was first
        except OSError as exc:
            log.warning("could not remove the spool file or folder %s: %s", entry.path, exc)
    if removed:
        log.info("removed %d spool folder(s) or file(s) of processes that have ended", removed)
    return removed


def _remove_if_unheld(path: str) -> int:
    """1 if the folder at ``path`` was removed (no process held it), else 0.

    Raises: OSError: it cannot be opened or removed.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return 0  # another sweep was first
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # its process lives
        # Locked until removed: were it being made, its maker sees it go and makes another.
        shutil.rmtree(path)
        return 1
    finally:
        os.close(descriptor)


class _SpoolStream(io.BufferedRandom):
    """A spool file's buffered stream, whose writes the file system refuses (a full disk, say:
    the buffer may meet it at any write, flush or close, also within pyHanko's own writes) raise
    SpoolUnavailable rather than OSError. A named one is removed when closed."""

    def __init__(self, raw: io.FileIO, spool: Path, path: Path | None):
        super().__init__(raw)
        self._spool = spool
        self._path = path

    def write(self, data) -> int:
        try:
            return super().write(data)
        except OSError as exc:
            raise refused_write(exc, self._spool) from exc

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:
            raise refused_write(exc, self._spool) from exc

    def close(self) -> None:
        try:
            super().close()  # the descriptor is closed even when its last flush fails
        finally:
            if self._path is not None:
                try:
                    self._path.unlink(missing_ok=True)
                except OSError as exc:  # the next sweep removes the folder with it
                    log.warning("could not remove the spool file %s: %s", self._path, exc)


class SpoolFile:
    """A temporary file in the process's folder of the spool directory (see
    :func:`process_folder`), created at its first use and removed when closed.

    A stream that sends its header and then nothing holds no descriptor. ``named``: the file has
    a path another process can open (a verification in a child process); otherwise it has no
    name at all once created. A write the file system refuses closes (and so removes) the file.
    """

    def __init__(self, directory: Path, reserve: DescriptorReserve, named: bool = False):
        self._directory = directory
        self._reserve = reserve
        self._named = named
        self._file: _SpoolStream | None = None

    def file(self) -> BinaryIO:
        """The open file, created now if need be.

        Raises: ServerBusy: too few descriptors are free to open another file, or the process's
            folder cannot be made; SpoolUnavailable: the file system refused the file.
        """
        if self._file is None:
            check_descriptors(self._reserve)
            folder = process_folder(self._directory)
            try:
                # mkstemp: mode 0600, a name no one else has.
                descriptor, name = tempfile.mkstemp(dir=folder, prefix=LOOSE_PREFIX)
            except OSError as exc:
                raise refused_write(exc, self._directory) from exc
            path = Path(name)
            if not self._named:
                try:
                    path.unlink()  # no name at all from here: the file goes with its process, however it ends
                except OSError as exc:
                    os.close(descriptor)
                    raise refused_write(exc, self._directory) from exc
            raw = io.FileIO(descriptor, "r+")
            raw.name = name  # the path the verification's child process opens
            self._file = _SpoolStream(raw, self._directory, path if self._named else None)
        return self._file

    @property
    def opened(self) -> bool:
        return self._file is not None

    @property
    def path(self) -> Path:
        """The file's path (a named file only)."""
        return Path(self.file().name)

    def write(self, data: bytes) -> None:
        """Raises: ServerBusy, SpoolUnavailable (see :meth:`file`); SpoolUnavailable: the file
        system refused the data (the file is closed and removed then)."""
        target = self.file()
        try:
            target.write(data)
        except SpoolUnavailable:
            self.close()
            raise

    async def write_async(self, data: bytes) -> None:
        """As :meth:`write`, a large piece in a thread: writing 1 MiB to the state directory's
        file system was measured here at about 2.3 ms (4 MiB, the largest message: about 10 ms),
        time every other call on the event loop would wait.

        Raises: as :meth:`write`.
        """
        target = self.file()
        try:
            if len(data) < OFF_THE_LOOP_BYTES:
                target.write(data)
            else:
                await off_the_loop(target.write, data)
        except SpoolUnavailable:
            self.close()
            raise

    def close(self) -> None:
        """Close and remove the file. Never raises for the file system: the file is discarded,
        and a write it refused was refused to the caller already."""
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except (OSError, SignServerError):
                pass

    def __enter__(self) -> "SpoolFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
