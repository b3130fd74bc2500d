"""SealKeyPin: the audit seal key's public half, pinned in the state directory.

The key that verifies seals must not come from the audited tables: whoever can write them could
point a seal at any key they can make sign. The sealer writes the token key's public key here the
first time it sees it, and never replaces it; ``signserver audit verify`` checks every seal with
this key only, and prints its fingerprint so that it can be compared with one kept elsewhere.

A seal key that is replaced (a P-256 key of an earlier version, or a key of another algorithm
than ``audit.seal_key_algorithm`` now chooses, see :mod:`signserver.audit.seal`)
keeps its pin; its successor is pinned beside it (``seal-key-2.pem``) with the number of the first
seal it made, and the old key verifies only the seals numbered before that one. No pin is ever
overwritten.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from signserver.errors import ConfigurationError, DataCorrupted

# Ed25519 where the token offers it; ECDSA or RSA on tokens without (see signserver.audit.seal).
SealPublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def fingerprint(public_key) -> str:
    """SHA-256 of the key's DER SubjectPublicKeyInfo, in lower-case hex."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def normalise_fingerprint(text: str) -> str:
    """``text`` as lower-case hex without separators (``AB:CD...`` is accepted)."""
    return text.strip().replace(":", "").replace(" ", "").lower()


FIRST_SEAL_LINE = b"# first seal: "
SUCCESSOR_SUFFIX = "-2"


@dataclass(frozen=True)
class PinnedKey:
    public_key: SealPublicKey
    fingerprint: str
    first_seal: int = 1  # the number of the first seal this key made; earlier ones are its predecessor's


class SealKeyPin:
    """The pin file (PEM public key, preceded by its fingerprint as a comment)."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> PinnedKey | None:
        """The pinned key, or None when nothing is pinned yet.

        Raises: DataCorrupted: the file is unreadable or holds no usable public key.
        """
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DataCorrupted(f"cannot read the pinned audit seal key {self.path}: {exc.strerror}") from exc
        try:
            public_key = serialization.load_pem_public_key(text)
        except ValueError as exc:
            raise DataCorrupted(f"{self.path} holds no PEM public key") from exc
        if not isinstance(public_key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            raise DataCorrupted(f"{self.path} holds a key of a type that does not seal the audit log")
        return PinnedKey(public_key, fingerprint(public_key), _first_seal(text, self.path))

    def successor(self) -> "SealKeyPin":
        """The pin of the key that replaced this one (``seal-key-2.pem`` beside ``seal-key.pem``):
        this pin stays, and verifies only the seals made before the successor's first."""
        return SealKeyPin(self.path.with_name(self.path.stem + SUCCESSOR_SUFFIX + self.path.suffix))

    def ensure(self, public_key: SealPublicKey, first_seal: int = 1) -> PinnedKey:
        """Pin ``public_key`` unless a key is pinned already, and return the pinned key.
        ``first_seal``: the number of the first seal the key will make (written only when pinning).

        Raises:
            ConfigurationError: another key is pinned (the token's seal key was replaced: only an
                operator who knows why may move the old pin away).
            DataCorrupted: the pin file is unreadable.
        """
        pinned = self.load()
        if pinned is None:
            self._write(public_key, first_seal)
            pinned = self.load()
        if pinned is None or pinned.fingerprint != fingerprint(public_key):
            raise ConfigurationError(
                "state_dir", f"the token's audit seal key (SHA-256 {fingerprint(public_key)}) is not the key "
                f"pinned in {self.path} (SHA-256 {pinned.fingerprint if pinned else 'none'}); seals are not "
                "made until this is resolved")
        return pinned

    def _write(self, public_key: SealPublicKey, first_seal: int) -> None:
        """Create the file atomically and only if absent: a concurrent writer's pin wins, and
        :meth:`ensure` then compares against it."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        text = (b"# signserver audit seal key: every seal is verified with this key only\n"
                + f"# SHA-256 fingerprint: {fingerprint(public_key)}\n".encode("ascii")
                + FIRST_SEAL_LINE + f"{first_seal}\n".encode("ascii") + pem)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".seal-key-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o644)  # a public key: readable by whoever verifies the log
            try:
                os.link(temporary, self.path)  # fails if the file exists: never overwritten
            except FileExistsError:
                pass
        finally:
            os.unlink(temporary)


def _first_seal(text: bytes, path: Path) -> int:
    """The pin's first seal number (1 for pins written before keys had successors).

    Raises: DataCorrupted: the line is there but holds no positive number.
    """
    for line in text.splitlines():
        if line.startswith(FIRST_SEAL_LINE):
            value = line[len(FIRST_SEAL_LINE):].strip()
            if not value.isdigit() or int(value) < 1:
                raise DataCorrupted(f"{path} names no valid first seal")
            return int(value)
    return 1
