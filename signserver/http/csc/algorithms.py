"""The object identifiers CSC speaks for algorithms, and signserver's algorithms they name."""

from __future__ import annotations

from asn1crypto import algos

from signserver.errors import InvalidArgument, UnsupportedAlgorithm
from signserver.hsm.algorithms import HashAlgorithm, KeyAlgorithm, SignatureAlgorithm

HASH_OIDS = {"2.16.840.1.101.3.4.2.1": HashAlgorithm.SHA256, "2.16.840.1.101.3.4.2.2": HashAlgorithm.SHA384,
             "2.16.840.1.101.3.4.2.3": HashAlgorithm.SHA512}
OID_OF_HASH = {hash_algorithm: oid for oid, hash_algorithm in HASH_OIDS.items()}
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"  # the key's algorithm: PKCS#1 v1.5 with the hash named apart
RSASSA_PSS = "1.2.840.113549.1.1.10"
EC_PUBLIC_KEY = "1.2.840.10045.2.1"  # the key's algorithm: ECDSA with the hash named apart
# Signature algorithms that name their hash.
SIGNATURE_OIDS = {
    "1.2.840.113549.1.1.11": SignatureAlgorithm.RSA_PKCS1V15_SHA256,
    "1.2.840.113549.1.1.12": SignatureAlgorithm.RSA_PKCS1V15_SHA384,
    "1.2.840.113549.1.1.13": SignatureAlgorithm.RSA_PKCS1V15_SHA512,
    "1.2.840.10045.4.3.2": SignatureAlgorithm.ECDSA_SHA256,
    "1.2.840.10045.4.3.3": SignatureAlgorithm.ECDSA_SHA384,
    "1.2.840.10045.4.3.4": SignatureAlgorithm.ECDSA_SHA512,
}
# For a key of each family: what credentials/info lists (key.algo).
KEY_ALGORITHM_OIDS = {
    "rsa": [RSA_ENCRYPTION, "1.2.840.113549.1.1.11", "1.2.840.113549.1.1.12", "1.2.840.113549.1.1.13", RSASSA_PSS],
    "ec": [EC_PUBLIC_KEY, "1.2.840.10045.4.3.2", "1.2.840.10045.4.3.3", "1.2.840.10045.4.3.4"],
    "ed25519": ["1.3.101.112"],
}
CURVE_OIDS = {KeyAlgorithm.EC_P256: "1.2.840.10045.3.1.7", KeyAlgorithm.EC_P384: "1.3.132.0.34"}
_BY_FAMILY_AND_HASH = {(a.family, a.hash, "pss" in a.value): a for a in SignatureAlgorithm if a.hash is not None}


def hash_algorithm(oid: str | None, field: str = "hashAlgorithmOID") -> HashAlgorithm:
    """Raises: UnsupportedAlgorithm: not SHA-256, SHA-384 or SHA-512."""
    try:
        return HASH_OIDS[oid or ""]
    except KeyError:
        raise UnsupportedAlgorithm(f"{field} {oid!r} is not SHA-256, SHA-384 or SHA-512 "
                                   f"({', '.join(HASH_OIDS)})") from None


def hash_of_length(digests: list[bytes]) -> HashAlgorithm:
    """The digest algorithm that digests of this length come from, for a request that names none
    (CSC 1.0.4's credentials/authorize).

    Raises: InvalidArgument: no digests, or of mixed or unknown lengths.
    """
    lengths = {len(d) for d in digests}
    by_length = {a.digest_size: a for a in HashAlgorithm}
    if len(lengths) != 1 or next(iter(lengths)) not in by_length:
        raise InvalidArgument("the hashes are SHA-256, SHA-384 or SHA-512 digests, all of one length; "
                              "or name the algorithm in hashAlgorithmOID")
    return by_length[lengths.pop()]


def signature_algorithm(sign_oid: str, hash_oid: str | None, params_b64: bytes | None = None) -> SignatureAlgorithm:
    """The signature algorithm of a signHash request: ``signAlgo``, with ``hashAlgo`` (or
    hashAlgorithmOID) where the OID names only the key's algorithm, and the RSASSA-PSS
    parameters (DER) where given.

    Raises: UnsupportedAlgorithm: an algorithm or parameters signserver does not sign with.
    """
    if sign_oid in SIGNATURE_OIDS:
        algorithm = SIGNATURE_OIDS[sign_oid]
        if hash_oid and hash_algorithm(hash_oid, "hashAlgo") is not algorithm.hash:
            raise UnsupportedAlgorithm(f"signAlgo {sign_oid} and hashAlgo {hash_oid} name two digest algorithms")
        return algorithm
    if sign_oid == RSASSA_PSS:
        digest = _pss_hash(params_b64) if params_b64 else hash_algorithm(hash_oid, "hashAlgo")
        if hash_oid and hash_algorithm(hash_oid, "hashAlgo") is not digest:
            raise UnsupportedAlgorithm("signAlgoParams and hashAlgo name two digest algorithms")
        return _BY_FAMILY_AND_HASH[("rsa", digest, True)]
    family = {RSA_ENCRYPTION: "rsa", EC_PUBLIC_KEY: "ec"}.get(sign_oid)
    if family is None:
        raise UnsupportedAlgorithm(f"signAlgo {sign_oid!r} is not one signserver signs digests with "
                                   f"({', '.join([*SIGNATURE_OIDS, RSA_ENCRYPTION, RSASSA_PSS, EC_PUBLIC_KEY])})")
    return _BY_FAMILY_AND_HASH[(family, hash_algorithm(hash_oid, "hashAlgo"), False)]


def _pss_hash(params_der: bytes) -> HashAlgorithm:
    """The digest of RSASSA-PSS parameters whose MGF1 uses the same digest and whose salt is as
    long as the digest (what signserver signs with).

    Raises: UnsupportedAlgorithm.
    """
    try:
        params = algos.RSASSAPSSParams.load(params_der)
        digest = HashAlgorithm(params["hash_algorithm"]["algorithm"].native)
        mgf_digest = HashAlgorithm(params["mask_gen_algorithm"]["parameters"]["algorithm"].native)
        salt = params["salt_length"].native
    except (ValueError, TypeError, KeyError):
        raise UnsupportedAlgorithm("signAlgoParams are not RSASSA-PSS parameters signserver signs with") from None
    if mgf_digest is not digest or salt != digest.digest_size:
        raise UnsupportedAlgorithm("RSASSA-PSS is signed here with MGF1 of the same digest and a salt as long as "
                                   "the digest")
    return digest
