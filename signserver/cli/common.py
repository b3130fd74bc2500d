"""What several command groups share: opening the service with the PIN from its sources, and
checking numbers and files before a command does anything."""

from __future__ import annotations

import argparse
import errno
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from signserver.cli.pins import read_pin
from signserver.config import USER_PIN_ENV, Config
from signserver.errors import InvalidArgument
from signserver.files import write_private

if TYPE_CHECKING:
    from signserver.service import SignService


def open_service(args, config: Config, with_database: bool = False) -> SignService:
    """The service on the configured (or ``--module``/``--token``) token; with ``with_database``,
    the database schema brought up to date first.

    Raises: ConfigurationError, InvalidArgument (no PIN).
    """
    from signserver.service import SignService  # the whole domain: not for --help or `hsm init`

    pin = read_pin("user PIN", USER_PIN_ENV, getattr(args, "pin_file", None), fallback_file=config.hsm.user_pin_file,
                   fallback_setting="hsm.user_pin_file")
    service = SignService.from_config(config, user_pin=pin, module=getattr(args, "module", None),
                                      token_label=getattr(args, "token", None))
    if with_database:
        service.prepare_database()
    return service


# --- numbers: argparse ``type`` functions, so that a bad one is refused before anything is done --

def positive_int(text: str) -> int:
    """A whole number of at least 1. Raises: argparse.ArgumentTypeError."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is less than 1")
    return value


def whole_number_from_to(least: int, most: int, unit: str) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from ``least`` to ``most`` (of ``unit``, for the
    message); the converter raises argparse.ArgumentTypeError."""
    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not least <= value <= most:
            raise argparse.ArgumentTypeError(f"{text} is not a number of {unit} from {least} to {most}")
        return value
    return whole_number


def seconds_up_to(most: float) -> Callable[[str], float]:
    """An argparse ``type``: a finite number of seconds from 0 to ``most``; the converter raises
    argparse.ArgumentTypeError."""
    def seconds(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and 0 <= value <= most):
            raise argparse.ArgumentTypeError(f"{text} is not a number of seconds from 0 to {most:g}")
        return value
    return seconds


# --- files: checked up front, so that a command that changes something never fails at its end --

def read_input(path: Path | None) -> bytes | None:
    """The file's bytes; None for no path.

    Raises: InvalidArgument: the file cannot be read.
    """
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from None


def check_output(path: Path | None, new: bool = False, private: bool = False) -> None:
    """Refuse, before the command does anything, an output file it could not write: a folder that
    is missing or not writable, a directory in the file's place, or (``new``) a file there. A
    ``private`` file (signserver.files.write_private) replaces the one there, so its folder must be
    writable even when the file is.

    Raises: InvalidArgument.
    """
    if path is None:
        return
    if new and (path.exists() or path.is_symlink()):
        raise InvalidArgument(f"{path} exists: choose another file")
    problem = None
    if path.is_dir():
        problem = errno.EISDIR
    elif path.exists() and not private:
        problem = None if os.access(path, os.W_OK) else errno.EACCES
    else:
        folder = path.parent
        if not folder.exists():
            problem = errno.ENOENT
        elif not folder.is_dir():
            problem = errno.ENOTDIR
        elif not os.access(folder, os.W_OK | os.X_OK):
            problem = errno.EACCES
    if problem is not None:
        raise InvalidArgument(f"cannot write {path}: {os.strerror(problem)}")


def write_output(path: Path, data: bytes, private: bool = False) -> None:
    """Write (or replace) the file; a ``private`` one (a secret, such as an OTP seed's QR code)
    with mode 0600 (signserver.files.write_private). Raises: InvalidArgument: it cannot be written."""
    try:
        if private:
            write_private(path, data)
        else:
            path.write_bytes(data)
    except OSError as exc:
        raise InvalidArgument(f"cannot write {path}: {exc.strerror}") from None
