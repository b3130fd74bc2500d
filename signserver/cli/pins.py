"""Reading PINs for the command line: from the environment, a file, or a prompt; never argv."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from signserver.cli.text import is_text
from signserver.config import read_secret_file
from signserver.errors import ConfigurationError, InvalidArgument
from signserver.files import write_private
from signserver.secret import Secret


def read_pin(what: str, env: str | None, file: Path | None, confirm: bool = False,
             fallback_file: Path | None = None, fallback_setting: str | None = None) -> Secret:
    """Return a PIN from ``file`` (named on the command line: it wins), else ``$env``, else
    ``fallback_file`` when it exists, else a prompt on the terminal (asked twice when ``confirm``).
    ``fallback_setting`` names the setting ``fallback_file`` comes from, which its errors name.

    Raises:
        ConfigurationError: the configured fallback file is unreadable, not text, empty or readable
            by others (InvalidArgument without ``fallback_setting``).
        InvalidArgument: so is ``file``; ``$env`` or the entry at the prompt is not text; or no
            source and no terminal to prompt on, or the two entries differ.
    """
    if file is not None:
        try:
            return read_secret_file(file, "")
        except ConfigurationError as exc:
            raise InvalidArgument(f"cannot read the {what}: {exc.problem}") from None
    if env and os.environ.get(env):
        pin = os.environ[env]
        if not is_text(pin):  # as a file's PIN must be; never quoted
            raise InvalidArgument(f"the {what} in ${env} is not valid UTF-8 text (check the encoding it was "
                                  "written in)")
        return Secret(pin)
    if fallback_file is not None and fallback_file.is_file():
        try:
            return read_secret_file(fallback_file, fallback_setting or "")
        except ConfigurationError as exc:
            if fallback_setting is None:
                raise InvalidArgument(f"cannot read the {what}: {exc.problem}") from None
            raise ConfigurationError(fallback_setting, f"cannot read the {what}: {exc.problem}") from None
    if not sys.stdin.isatty():
        hint = f"set {env} or " if env else ""
        raise InvalidArgument(f"no {what} given: {hint}pass a file with the PIN, or run on a terminal")
    pin = _prompt(what, confirm)
    if not pin:
        raise InvalidArgument(f"the {what} must not be empty")
    return Secret(pin)


def read_optional_pin(what: str, env: str, file: Path | None, hint: str) -> Secret | None:
    """Return a PIN from ``file`` or ``$env`` when either is given (the file first), else ask on the terminal,
    where an empty answer means none; None without a terminal. ``hint`` tells when to leave the
    prompt empty.

    Raises:
        InvalidArgument: ``file`` is unreadable, empty or readable by others; the PIN is not text.
    """
    if os.environ.get(env) or file is not None:
        return read_pin(what, env, file)
    if not sys.stdin.isatty():
        return None
    pin = _prompt(f"{what} ({hint})", confirm=False)
    return Secret(pin) if pin else None


def write_pin_file(path: Path, pin: Secret, what: str) -> None:
    """Keep a generated PIN in a new file of mode 0600.

    Raises:
        InvalidArgument: the file already holds something (a PIN is never overwritten), or
            cannot be written.
    """
    if path.exists() and path.stat().st_size > 0:
        raise InvalidArgument(f"{path} already holds something; a generated {what} never overwrites a file")
    try:
        write_private(path, (pin.reveal() + "\n").encode("utf-8"))
    except FileExistsError:  # making the folder, where a file is
        raise InvalidArgument(f"cannot write the {what} to {path}: {path.parent} is not a folder") from None
    except OSError as exc:
        raise InvalidArgument(f"cannot write the {what} to {path}: {exc.strerror}") from None


def _prompt(what: str, confirm: bool) -> str:
    """Raises: InvalidArgument: the entries differ or are not text, or the input ended (Ctrl-D)
    instead."""
    try:
        pin = getpass.getpass(f"{what}: ")
        if confirm and getpass.getpass(f"{what} (again): ") != pin:
            raise InvalidArgument(f"the two {what}s differ")
    except EOFError:
        print(file=sys.stderr)  # the prompt's line was left open
        raise InvalidArgument(f"no {what} given: the input ended") from None
    except UnicodeDecodeError:  # a byte the terminal's encoding has not
        print(file=sys.stderr)  # the prompt's line was left open
        pin = None
    if pin is None or not is_text(pin):
        raise InvalidArgument(f"the {what} is not valid UTF-8 text (check the terminal's encoding)")
    return pin
