"""The directories a server writes, made and tried before it starts its workers.

A directory the workers cannot write (its mode, its owner, a read-only mount, a file where the
directory should be) would not stop the start: the server would serve, and fail the first call
that spools a document. So each is made if missing and a small file is written, synced and
removed in it, as the server's own files are.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from signserver.config import Config
from signserver.errors import ConfigurationError


def writable_dirs(config: Config) -> list[tuple[str, Path]]:
    """The directories the server writes, each with the setting that names it: the state
    directory, its spool of uploaded documents, and the spool of prepared documents
    (``[pades] spool_dir``, by default in the state directory)."""
    prepared = ("pades.spool_dir", config.pades.spool_dir) if config.pades.spool_dir \
        else ("state_dir", config.state_dir / "prepared")
    return [("state_dir", config.state_dir), ("state_dir", config.state_dir / "spool"), prepared]


def check_writable_dirs(config: Config) -> None:
    """Make (mode 0700, as the server does) and try each of :func:`writable_dirs`.

    Raises: ConfigurationError (naming the setting and the directory): one of them cannot be made,
    is not a directory, or a file cannot be written in it.
    """
    for setting, directory in writable_dirs(config):
        check_writable(directory, setting)


def check_writable(directory: Path, setting: str) -> None:
    """Make ``directory`` if missing, then write, sync and remove a file in it.

    Raises: ConfigurationError (naming ``setting``): as check_writable_dirs.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:  # exist_ok covers a directory only: a file, or a link to one, is there
        raise ConfigurationError(setting, f"{directory} is not a directory") from None
    except OSError as exc:
        raise ConfigurationError(setting, f"cannot make {directory}: {exc.strerror or exc}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-check-")
    except NotADirectoryError:  # a component of the path is a file
        raise ConfigurationError(setting, f"{directory} is not a directory") from None
    except OSError as exc:
        raise ConfigurationError(setting, f"cannot write in {directory}: {exc.strerror or exc}") from None
    try:
        os.write(fd, b"signserver")
        os.fsync(fd)  # a full or read-only file system may say so only here
    except OSError as exc:
        raise ConfigurationError(setting, f"cannot write in {directory}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
        Path(probe).unlink(missing_ok=True)
