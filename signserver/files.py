"""Files only their owner may read: TLS keys, client keys, the demonstration's secrets."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 (its folder 0700 when it has to be made).

    The data goes into a new file of mode 0600 beside ``path``, which then takes its place: a file
    that was there before, readable by others (mode 0644, say), is replaced rather than written
    into, so the data is never readable by anyone but the owner, not even for a moment; a
    symbolic link there is replaced, never followed.

    Raises: OSError: the folder cannot be made or written (nothing is left in it).
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # mkstemp: O_CREAT | O_EXCL, mode 0600 whatever the umask, a name no one else has.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make the folder's new entry durable (a PIN file written before a token takes the PIN must
    outlast a crash). Best effort: some file systems cannot sync a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_private_key(path: Path, key) -> None:
    """Write ``key`` (a private key of pyca/cryptography) to ``path`` as unencrypted PKCS#8 PEM,
    as :func:`write_private` does: for TLS keys, which servers and clients read without a
    passphrase, so the file's mode is their protection."""
    write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
