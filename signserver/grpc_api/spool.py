"""Spool files for streamed documents, opened only once there is something to put in them."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import BinaryIO

from signserver.descriptors import DescriptorReserve
from signserver.grpc_api.stream_limits import check_descriptors
from signserver.outlasting import off_the_loop

# Pieces at least this large are written in a thread; smaller ones cost less than the hand-over
# (about 0.1 ms).
OFF_THE_LOOP_BYTES = 64 * 1024


class SpoolFile:
    """A temporary file in the spool directory, created at its first use and removed when closed.

    A stream that sends its header and then nothing holds no descriptor. ``named``: the file has
    a path another process can open (a verification in a child process); otherwise it has no
    name at all once created.
    """

    def __init__(self, directory: Path, reserve: DescriptorReserve, named: bool = False):
        self._directory = directory
        self._reserve = reserve
        self._named = named
        self._file = None

    def file(self) -> BinaryIO:
        """The open file, created now if need be.

        Raises: ServerBusy: too few descriptors are free to open another file.
        """
        if self._file is None:
            check_descriptors(self._reserve)
            self._directory.mkdir(parents=True, exist_ok=True)
            self._file = (tempfile.NamedTemporaryFile(dir=self._directory, prefix="spool-") if self._named
                          else tempfile.TemporaryFile(dir=self._directory))
        return self._file

    @property
    def opened(self) -> bool:
        return self._file is not None

    @property
    def path(self) -> Path:
        """The file's path (a named file only)."""
        return Path(self.file().name)

    def write(self, data: bytes) -> None:
        """Raises: ServerBusy (see :meth:`file`)."""
        self.file().write(data)

    async def write_async(self, data: bytes) -> None:
        """As :meth:`write`, a large piece in a thread: writing 1 MiB to the state directory's
        file system was measured here at about 2.3 ms (4 MiB, the largest message: about 10 ms),
        time every other call on the event loop would wait.

        Raises: ServerBusy (see :meth:`file`).
        """
        target = self.file()
        if len(data) < OFF_THE_LOOP_BYTES:
            target.write(data)
        else:
            await off_the_loop(target.write, data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "SpoolFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
