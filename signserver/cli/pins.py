"""Reading PINs for the command line: from the environment, a file, or a prompt; never argv."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from signserver.config import read_secret_file
from signserver.errors import ConfigurationError, InvalidArgument
from signserver.secret import Secret


def read_pin(what: str, env: str | None, file: Path | None, confirm: bool = False,
             fallback_file: Path | None = None) -> Secret:
    """Return a PIN from ``$env``, else ``file``, else ``fallback_file`` when it exists, else a
    prompt on the terminal (asked twice when ``confirm``).

    Raises:
        ConfigurationError: the configured fallback file is unreadable, empty or readable by others.
        InvalidArgument: so is ``file``; or no source and no terminal to prompt on, or the two
            entries differ.
    """
    if env and os.environ.get(env):
        return Secret(os.environ[env])
    if file is not None:
        try:
            return read_secret_file(file, "")
        except ConfigurationError as exc:
            raise InvalidArgument(f"cannot read the {what}: {exc.reason}") from None
    if fallback_file is not None and fallback_file.is_file():
        return read_secret_file(fallback_file, "hsm.user_pin_file")
    if not sys.stdin.isatty():
        hint = f"set {env} or " if env else ""
        raise InvalidArgument(f"no {what} given: {hint}pass a file with the PIN, or run on a terminal")
    pin = getpass.getpass(f"{what}: ")
    if confirm and getpass.getpass(f"{what} (again): ") != pin:
        raise InvalidArgument(f"the two {what}s differ")
    if not pin:
        raise InvalidArgument(f"the {what} must not be empty")
    return Secret(pin)
