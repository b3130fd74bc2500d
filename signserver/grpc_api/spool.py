"""Spool files for streamed documents, opened only once there is something to put in them."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import BinaryIO

from signserver.descriptors import DescriptorReserve
from signserver.grpc_api.stream_limits import check_descriptors


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

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "SpoolFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
