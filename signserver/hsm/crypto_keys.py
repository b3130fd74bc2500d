"""HSM keys presented as ``cryptography`` private keys.

With these, ``x509.CertificateBuilder.sign()``, ``CertificateSigningRequestBuilder.sign()``
and CRL or OCSP builders work unchanged while the private key never leaves the HSM. Everything
that would reveal the key (``private_bytes``, ``private_numbers``) raises.
"""

from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm as CryptographyUnsupported
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from signserver.errors import UnsupportedAlgorithm
from signserver.hsm.algorithms import HashAlgorithm, SignatureAlgorithm
from signserver.hsm.keystore import HsmKeyStore, check_key_id

_NOT_EXTRACTABLE = "the private key is inside the HSM and cannot be exported"


def _digest_of(data: bytes, algorithm) -> tuple[bytes, HashAlgorithm]:
    """Hash ``data`` unless it is already a digest (``Prehashed``)."""
    if isinstance(algorithm, Prehashed):
        return data, HashAlgorithm.from_cryptography(algorithm._algorithm)
    digest_algorithm = HashAlgorithm.from_cryptography(algorithm)
    return digest_algorithm.digest(data), digest_algorithm


class _HsmKey:
    def __init__(self, store: HsmKeyStore, key_id: str):
        self._store = store
        self.key_id = key_id
        self._public = store.public_key(key_id)

    def public_key(self):
        return self._public

    def private_bytes(self, *args, **kwargs):
        raise CryptographyUnsupported(_NOT_EXTRACTABLE)

    def private_numbers(self):
        raise CryptographyUnsupported(_NOT_EXTRACTABLE)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


class HsmRsaPrivateKey(_HsmKey, rsa.RSAPrivateKey):
    """An RSA key in the HSM; signs with PKCS#1 v1.5 or PSS (salt length = digest length)."""

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def sign(self, data: bytes, padding_scheme: padding.AsymmetricPadding, algorithm) -> bytes:
        digest, digest_algorithm = _digest_of(data, algorithm)
        if isinstance(padding_scheme, padding.PKCS1v15):
            scheme = "rsa-pkcs1v15"
        elif isinstance(padding_scheme, padding.PSS):
            if padding_scheme._salt_length not in (padding.PSS.DIGEST_LENGTH, digest_algorithm.digest_size):
                raise UnsupportedAlgorithm("the HSM signs PSS with a salt as long as the digest")
            scheme = "rsa-pss"
        else:
            raise UnsupportedAlgorithm(f"RSA padding {padding_scheme.name} is not supported")
        signature_algorithm = SignatureAlgorithm(f"{scheme}-{digest_algorithm.value}")
        return self._store.sign_digest(self.key_id, digest, signature_algorithm)

    def decrypt(self, ciphertext: bytes, padding_scheme) -> bytes:
        raise UnsupportedAlgorithm("signing keys in the HSM do not decrypt")


class HsmEllipticCurvePrivateKey(_HsmKey, ec.EllipticCurvePrivateKey):
    """An EC key in the HSM; signs with ECDSA and returns DER ``(r, s)``."""

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise UnsupportedAlgorithm("only ECDSA signatures are supported")
        digest, digest_algorithm = _digest_of(data, signature_algorithm.algorithm)
        algorithm = SignatureAlgorithm(f"ecdsa-{digest_algorithm.value}")
        return self._store.sign_digest(self.key_id, digest, algorithm)

    def exchange(self, algorithm, peer_public_key):
        raise UnsupportedAlgorithm("signing keys in the HSM do not do key agreement")


class HsmEd25519PrivateKey(_HsmKey, ed25519.Ed25519PrivateKey):
    """An Ed25519 key in the HSM (pure EdDSA over the whole message)."""

    def sign(self, data: bytes) -> bytes:
        return self._store.sign_digest(self.key_id, data, SignatureAlgorithm.ED25519)

    def private_bytes_raw(self) -> bytes:
        raise CryptographyUnsupported(_NOT_EXTRACTABLE)


HsmPrivateKey = HsmRsaPrivateKey | HsmEllipticCurvePrivateKey | HsmEd25519PrivateKey


def hsm_private_key(store: HsmKeyStore, key_id: str) -> HsmPrivateKey:
    """The HSM key ``key_id`` as a ``cryptography`` private key.

    The CA's and the OCSP responder's keys are asked for on every certificate, CRL and OCSP
    response: the key is read from the token (its type and public half) once per session and
    kept beside the session's handles, so later calls do not touch the token at all.

    Raises: InvalidArgument (not a key id), KeyNotFound, UnsupportedAlgorithm, HsmError.
    """
    cache_key = ("private key object", check_key_id(key_id).hex())
    # Read and written without the PKCS#11 lock: a dict operation is atomic, and two threads
    # that both miss only build the same object twice.
    cached = store.session.cache.get(cache_key)
    if cached is not None:
        return cached
    algorithm = store.get(key_id).algorithm
    if algorithm is None:
        raise UnsupportedAlgorithm(f"key {key_id} is of a type signserver does not use")
    cls = {"rsa": HsmRsaPrivateKey, "ec": HsmEllipticCurvePrivateKey,
           "ed25519": HsmEd25519PrivateKey}[algorithm.family]
    key = store.session.cache[cache_key] = cls(store, key_id)
    return key


__all__ = ["hsm_private_key", "HsmPrivateKey", "HsmRsaPrivateKey", "HsmEllipticCurvePrivateKey",
           "HsmEd25519PrivateKey"]
