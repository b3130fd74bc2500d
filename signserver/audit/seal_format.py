"""What a seal signs, and how a signature over it is checked.

A chained seal (format 2) signs a structure that names itself (a fixed context string and a
version) and holds the seal's number, the sealed record's seq and hash, the seal's time and the
digest of the previous seal: removing, reordering or replacing a seal breaks the chain, and a
seal's time cannot be moved. Legacy seals (format 1, before the chain) signed only seq and hash.

The seal key signs this structure whole: an Ed25519 key hashes inside the HSM, so no digest that
a caller chose (what SignHash signs) can ever yield a seal. On a token without EdDSA the seal key
is ECDSA or RSA (PKCS#1 v1.5 with SHA-256, see KeyAlgorithm.own_signature_algorithm), which sign
a digest: there SignHash's refusal of every key labelled for the server's own use is what keeps a
caller from having it sign one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from signserver.hsm.algorithms import SignatureAlgorithm

LEGACY_FORMAT, CHAINED_FORMAT = 1, 2
CHAINED_CONTEXT = b"signserver audit seal v2\n"
NO_PREVIOUS_SEAL = "0" * 64


@dataclass(frozen=True)
class SealContent:
    """The signed fields of one seal (a row of ``audit_seals`` without its signature)."""

    number: int
    seq: int
    hash: str
    at: int
    format: int = CHAINED_FORMAT
    prev_seal: str = NO_PREVIOUS_SEAL

    def message(self) -> bytes:
        """The bytes the seal key signs."""
        if self.format == LEGACY_FORMAT:
            return f"signserver audit seal\n{self.seq}\n{self.hash}".encode("ascii")
        fields = {"number": self.number, "seq": self.seq, "hash": self.hash, "at": self.at,
                  "prev_seal": self.prev_seal}
        return CHAINED_CONTEXT + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("ascii")

    def digest(self) -> str:
        """What the next seal names as its previous one."""
        return hashlib.sha256(self.message()).hexdigest()

    @classmethod
    def of_row(cls, row) -> "SealContent":
        return cls(number=row.number, seq=row.seq, hash=row.hash, at=row.at, format=row.format,
                   prev_seal=row.prev_seal)


def signature_algorithm_for(public_key) -> SignatureAlgorithm:
    """The scheme a seal key of this type signs with.

    Raises: TypeError: not a key type that seals (the pin loader admits no other).
    """
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return SignatureAlgorithm.ED25519
    if isinstance(public_key, ec.EllipticCurvePublicKey):  # made before Ed25519, or on a token without it
        return SignatureAlgorithm.ECDSA_SHA256
    if isinstance(public_key, rsa.RSAPublicKey):  # a token without EC or EdDSA
        return SignatureAlgorithm.RSA_PKCS1V15_SHA256
    raise TypeError(f"a {type(public_key).__name__} does not seal the audit log")


def signature_is_valid(public_key, signature: bytes, content: SealContent) -> bool:
    """Whether ``signature`` is the seal key's signature over ``content``."""
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, content.message())
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, content.message(), padding.PKCS1v15(), hashes.SHA256())
        else:
            public_key.verify(signature, content.message(), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):  # ValueError: not even shaped like a signature
        return False
    return True
