"""The RA's secret key: 32 random bytes in a file only its owner may read (``ra.secret_key_file``,
by default <state_dir>/ra-secret.key). It seals what the RA must keep but never show, such as the
operators' OTP seeds. Made on first use; a file that is not what it should be is refused rather
than repaired, because repairing it would silently lose what it sealed."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from signserver.ra.errors import SettingsError

KEY_BYTES = 32


def load_secret_key(path: Path) -> bytes:
    """The key in ``path``, made there first when there is no file (mode 0600, its folder 0700
    when it has to be made). Two processes starting at once end with the same key: the file
    appears whole (a hard link of a finished temporary file) or not at all.

    Raises: SettingsError: the file cannot be read or made, is not a regular file, is readable or
    writable by others than its owner, or does not hold exactly 32 bytes (the message says how to
    put it right).
    """
    path = Path(path)
    if not os.path.lexists(path):
        _create(path)
    return _read(path)


def _create(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(KEY_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temporary, path)  # fails if another process made it first: theirs is kept
            except FileExistsError:
                pass
        finally:
            temporary.unlink(missing_ok=True)
    except OSError as exc:
        raise SettingsError(f"ra.secret_key_file: cannot make {path} ({exc.strerror}); make its folder "
                            "writable by the RA's user, or set ra.secret_key_file to a writable place") from None


def _read(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise SettingsError(f"ra.secret_key_file: cannot read {path} ({exc.strerror}); it must be a regular "
                            "file the RA's user owns and reads") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise SettingsError(f"ra.secret_key_file: {path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if info.st_mode & 0o077:
            raise SettingsError(f"ra.secret_key_file: {path} may be read or written by others than its owner "
                                f"(mode {stat.S_IMODE(info.st_mode):04o}): run `chmod 600 {path}`")
        key = handle.read(KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise SettingsError(f"ra.secret_key_file: {path} holds {len(key) if len(key) <= KEY_BYTES else 'more than 32'} "
                            f"bytes, not {KEY_BYTES}: restore the RA's key from its backup (a new key cannot "
                            "open what the old one sealed: the operators would need new OTP seeds)")
    return key
