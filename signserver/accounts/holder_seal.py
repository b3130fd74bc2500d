"""The holder's seal: what makes a signing data package openable only with the holder's secrets.

Each account has an X25519 key pair. Packages are sealed to its public half (so that the CA can
make a package at renewal without the holder), and its private half is stored only encrypted,
under a key derived from the holder's password and, when the holder chose recovery by code, for
one derived from the recovery code (both derived by SecretHasher.derive, in the same argon2id
evaluation that checks the secret). The password's key locks it (AES-256-GCM); the recovery code's
key stands for an X25519 key pair (:func:`key_pair_from`) whose public half is stored, and the
seal key is sealed to that, so that a new seal key can be sealed for the recovery code at a
password change, when the server has the password but not the code (see
signserver/accounts/seal_rotation.py). Each sealed value is bound to a context naming what it is
and whose, so a value copied to another row or account does not open there.

Between Authorize and the signatures, the opened package travels sealed under a key derived from
the activation token, which the server stores only as a hash.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from signserver.errors import DataCorrupted

_VERSION = b"\x01"
_NONCE = 12


def new_seal_key() -> tuple[bytes, bytes]:
    """A new X25519 key pair, as (private, public) raw bytes."""
    private = X25519PrivateKey.generate()
    return (private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
            private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def public_half(private_raw: bytes) -> bytes:
    """The raw public key of an X25519 private key."""
    return X25519PrivateKey.from_private_bytes(private_raw).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_pair_from(secret_key: bytes) -> tuple[bytes, bytes]:
    """The X25519 key pair, as (private, public) raw bytes, that a key derived from a secret stands
    for: the same secret gives the same pair, and only the secret gives its private half."""
    private = HKDF(hashes.SHA256(), 32, salt=None, info=b"signserver secret's seal key pair").derive(secret_key)
    return private, public_half(private)


def lock(key: bytes, plaintext: bytes, context: bytes) -> bytes:
    """AES-256-GCM under a 32-byte key, bound to ``context``."""
    nonce = os.urandom(_NONCE)
    return _VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, context)


def unlock(key: bytes, sealed: bytes, context: bytes) -> bytes:
    """Open what :func:`lock` made.

    Raises: DataCorrupted: wrong key, altered value, or another context.
    """
    if len(sealed) < 1 + _NONCE + 16 or sealed[:1] != _VERSION:
        raise DataCorrupted("a sealed value is damaged")
    try:
        return AESGCM(key).decrypt(sealed[1:1 + _NONCE], sealed[1 + _NONCE:], context)
    except InvalidTag:
        raise DataCorrupted("a sealed value does not open with this key") from None


def seal_to(public_raw: bytes, plaintext: bytes, context: bytes) -> bytes:
    """Encrypt to an X25519 public key (ephemeral key agreement, HKDF-SHA256, AES-256-GCM)."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key = _agreed_key(ephemeral.exchange(X25519PublicKey.from_public_bytes(public_raw)), ephemeral_public,
                      public_raw)
    return ephemeral_public + lock(key, plaintext, context)


def open_sealed(private_raw: bytes, sealed: bytes, context: bytes) -> bytes:
    """Open what :func:`seal_to` made for this key pair.

    Raises: DataCorrupted: sealed to another key, altered, or another context.
    """
    if len(sealed) < 32:
        raise DataCorrupted("a sealed value is damaged")
    ephemeral_public, rest = sealed[:32], sealed[32:]
    private = X25519PrivateKey.from_private_bytes(private_raw)
    public_raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    except ValueError:
        raise DataCorrupted("a sealed value is damaged") from None
    return unlock(_agreed_key(shared, ephemeral_public, public_raw), rest, context)


def token_key(activation_token: str) -> bytes:
    """The key an activation token's opened package is sealed under (the token has 256 bits)."""
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"signserver activation token key").derive(
        activation_token.encode("utf-8"))


def _agreed_key(shared: bytes, ephemeral_public: bytes, public_raw: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=ephemeral_public + public_raw,
                info=b"signserver signing data package").derive(shared)
