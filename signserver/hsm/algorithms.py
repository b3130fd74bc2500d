"""The key and signature algorithms signserver offers, and how each maps to PKCS#11."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import KeyType, Mechanism
from pkcs11.mechanisms import MGF

from signserver.errors import InvalidArgument, UnsupportedAlgorithm


def _parse(cls, name: str, what: str):
    try:
        return cls(name.strip().lower())
    except ValueError:
        choices = ", ".join(member.value for member in cls)
        raise UnsupportedAlgorithm(f"unknown {what} {name!r}; choose one of {choices}") from None


class KeyAlgorithm(enum.Enum):
    """A key pair type and size the HSM can generate."""

    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    ED25519 = "ed25519"

    @classmethod
    def parse(cls, name: str) -> "KeyAlgorithm":
        """Return the algorithm called ``name`` (e.g. ``"rsa-2048"``, ``"EC-P256"``).

        Raises:
            UnsupportedAlgorithm: no such algorithm.
        """
        return _parse(cls, name, "key algorithm")

    @property
    def family(self) -> str:
        """``"rsa"``, ``"ec"`` or ``"ed25519"``."""
        return self.value.split("-")[0]

    @property
    def size(self) -> int:
        """Key size in bits (the curve's size for EC keys)."""
        return {"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096,
                "ec-p256": 256, "ec-p384": 384, "ed25519": 256}[self.value]

    @property
    def key_type(self) -> KeyType:
        return {"rsa": KeyType.RSA, "ec": KeyType.EC, "ed25519": KeyType.EC_EDWARDS}[self.family]

    @property
    def generation_mechanism(self) -> Mechanism:
        return {"rsa": Mechanism.RSA_PKCS_KEY_PAIR_GEN, "ec": Mechanism.EC_KEY_PAIR_GEN,
                "ed25519": Mechanism.EC_EDWARDS_KEY_PAIR_GEN}[self.family]

    @property
    def curve_oid(self) -> str | None:
        """The named curve's OID for EC and Edwards keys, else None."""
        return {"ec-p256": "1.2.840.10045.3.1.7", "ec-p384": "1.3.132.0.34",
                "ed25519": "1.3.101.112"}.get(self.value)

    @property
    def ec_curve(self) -> ec.EllipticCurve:
        return {"ec-p256": ec.SECP256R1(), "ec-p384": ec.SECP384R1()}[self.value]

    @classmethod
    def from_curve_oid(cls, oid: str) -> "KeyAlgorithm | None":
        return next((a for a in cls if a.curve_oid == oid), None)

    @classmethod
    def from_rsa_bits(cls, bits: int) -> "KeyAlgorithm | None":
        return next((a for a in cls if a.family == "rsa" and a.size == bits), None)

    @classmethod
    def of_public_key(cls, public_key) -> "KeyAlgorithm":
        """The algorithm of a ``cryptography`` public key (a certificate's, say).

        Raises: UnsupportedAlgorithm: a key type or size signserver does not generate.
        """
        found = None
        if isinstance(public_key, rsa.RSAPublicKey):
            found = cls.from_rsa_bits(public_key.key_size)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            found = next((a for a in cls if a.family == "ec" and a.ec_curve.name == public_key.curve.name), None)
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            found = cls.ED25519
        if found is None:
            raise UnsupportedAlgorithm(f"a {type(public_key).__name__} is not a key type signserver uses")
        return found

    def own_signature_algorithm(self) -> "SignatureAlgorithm":
        """How the server's own keys of this type sign (OCSP responses, time stamps, audit seals).

        RSA signs PKCS#1 v1.5 with SHA-256: it needs only CKM_RSA_PKCS, which every token that
        generates RSA keys offers (openCryptoki lists no SHA256_RSA_PKCS, and PSS is optional in
        PKCS#11), it is what every OCSP client and CMS verifier accepts, and ``cryptography``'s
        OCSP builder signs RSA in no other way; its known weaknesses concern encryption, not
        signatures. EC keys sign ECDSA with the digest that matches the curve, Ed25519 pure EdDSA.
        """
        if self.family == "rsa":
            return SignatureAlgorithm.RSA_PKCS1V15_SHA256
        if self is KeyAlgorithm.EC_P384:
            return SignatureAlgorithm.ECDSA_SHA384
        if self.family == "ec":
            return SignatureAlgorithm.ECDSA_SHA256
        return SignatureAlgorithm.ED25519


class HashAlgorithm(enum.Enum):
    """A digest algorithm for the digests signserver signs."""

    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"

    @property
    def digest_size(self) -> int:
        return {"sha256": 32, "sha384": 48, "sha512": 64}[self.value]

    @property
    def mechanism(self) -> Mechanism:
        return {"sha256": Mechanism.SHA256, "sha384": Mechanism.SHA384,
                "sha512": Mechanism.SHA512}[self.value]

    @property
    def mgf(self) -> MGF:
        return {"sha256": MGF.SHA256, "sha384": MGF.SHA384, "sha512": MGF.SHA512}[self.value]

    @property
    def cryptography_hash(self) -> hashes.HashAlgorithm:
        return {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(),
                "sha512": hashes.SHA512()}[self.value]

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self.value, data).digest()

    @classmethod
    def from_cryptography(cls, algorithm: hashes.HashAlgorithm) -> "HashAlgorithm":
        """Raises: UnsupportedAlgorithm: not SHA-256, SHA-384 or SHA-512."""
        try:
            return cls(algorithm.name)
        except ValueError:
            raise UnsupportedAlgorithm(f"digest algorithm {algorithm.name} is not supported; "
                                       "use SHA-256, SHA-384 or SHA-512") from None


# DER prefix of a PKCS#1 v1.5 DigestInfo for each hash (RFC 8017, section 9.2, note 1).
_DIGEST_INFO_PREFIX = {
    HashAlgorithm.SHA256: bytes.fromhex("3031300d060960864801650304020105000420"),
    HashAlgorithm.SHA384: bytes.fromhex("3041300d060960864801650304020205000430"),
    HashAlgorithm.SHA512: bytes.fromhex("3051300d060960864801650304020305000440"),
}


class SignatureAlgorithm(enum.Enum):
    """A signature scheme: padding (for RSA) and digest, or pure Ed25519."""

    RSA_PKCS1V15_SHA256 = "rsa-pkcs1v15-sha256"
    RSA_PKCS1V15_SHA384 = "rsa-pkcs1v15-sha384"
    RSA_PKCS1V15_SHA512 = "rsa-pkcs1v15-sha512"
    RSA_PSS_SHA256 = "rsa-pss-sha256"
    RSA_PSS_SHA384 = "rsa-pss-sha384"
    RSA_PSS_SHA512 = "rsa-pss-sha512"
    ECDSA_SHA256 = "ecdsa-sha256"
    ECDSA_SHA384 = "ecdsa-sha384"
    ECDSA_SHA512 = "ecdsa-sha512"
    ED25519 = "ed25519"

    @classmethod
    def parse(cls, name: str) -> "SignatureAlgorithm":
        """Raises: UnsupportedAlgorithm: no such signature algorithm."""
        return _parse(cls, name, "signature algorithm")

    @property
    def family(self) -> str:
        """The key family this scheme needs: ``"rsa"``, ``"ec"`` or ``"ed25519"``."""
        return {"rsa": "rsa", "ecdsa": "ec", "ed25519": "ed25519"}[self.value.split("-")[0]]

    @property
    def hash(self) -> HashAlgorithm | None:
        """The digest algorithm, or None for Ed25519 (which signs the data itself)."""
        if self is SignatureAlgorithm.ED25519:
            return None
        return HashAlgorithm(self.value.rsplit("-", 1)[1])

    def mechanism(self) -> tuple[Mechanism, object]:
        """The PKCS#11 mechanism and its parameter, applied to a digest (or to data for Ed25519).

        SoftHSM has no combined hash-and-sign ECDSA mechanism, and the digest arrives already
        computed anyway, so the raw mechanisms are used throughout.
        """
        if self.value.startswith("rsa-pss"):
            digest = self.hash
            return Mechanism.RSA_PKCS_PSS, (digest.mechanism, digest.mgf, digest.digest_size)
        if self.value.startswith("rsa-pkcs1v15"):
            return Mechanism.RSA_PKCS, None
        if self.family == "ec":
            return Mechanism.ECDSA, None
        return Mechanism.EDDSA, None

    def token_input(self, message: bytes) -> bytes:
        """What goes into ``C_Sign``: the DigestInfo for PKCS#1 v1.5, else ``message`` itself.

        Raises:
            InvalidArgument: a digest has the wrong length for its algorithm.
        """
        digest = self.hash
        if digest is not None and len(message) != digest.digest_size:
            raise InvalidArgument(
                f"a {digest.value.upper()} digest has {digest.digest_size} bytes, not {len(message)}"
            )
        if self.value.startswith("rsa-pkcs1v15"):
            return _DIGEST_INFO_PREFIX[digest] + message
        return message

    def encode_token_output(self, raw: bytes) -> bytes:
        """The signature in its standard encoding: DER ``(r, s)`` for ECDSA, else as is."""
        if self.family != "ec":
            return raw
        half = len(raw) // 2
        return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    def check_key(self, key: KeyAlgorithm) -> None:
        """Raises: UnsupportedAlgorithm: the scheme does not apply to that key type."""
        if key.family != self.family:
            raise UnsupportedAlgorithm(
                f"{self.value} cannot be used with a {key.value} key"
            )


@dataclass(frozen=True)
class KeyAttributes:
    """The protection attributes of a private key, as the token reports them."""

    token: bool
    private: bool
    sensitive: bool
    extractable: bool
    always_sensitive: bool
    never_extractable: bool
