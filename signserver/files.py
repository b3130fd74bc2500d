"""Files only their owner may read: TLS keys, client keys, the demonstration's secrets."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 (its folder 0700 when it has to be made)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write_private_key(path: Path, key) -> None:
    """Write ``key`` (a private key of pyca/cryptography) to ``path`` as unencrypted PKCS#8 PEM,
    as :func:`write_private` does: for TLS keys, which servers and clients read without a
    passphrase, so the file's mode is their protection."""
    write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
