"""PKCS#10 certificate requests signed by a key on the token, with the scheme asked for."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding

from signserver.errors import HsmError, SignServerError, UnsupportedAlgorithm
from signserver.hsm.algorithms import HashAlgorithm, KeyAlgorithm, SignatureAlgorithm
from signserver.hsm.crypto_keys import HsmPrivateKey


def build_certificate_request(private_key: HsmPrivateKey, key_algorithm: KeyAlgorithm | None, subject: x509.Name,
                              signature_algorithm: SignatureAlgorithm | None = None) -> x509.CertificateSigningRequest:
    """A request for ``subject`` signed inside the HSM with ``signature_algorithm`` (default:
    PKCS#1 v1.5 or ECDSA with SHA-256, SHA-384 for P-384 keys; pure EdDSA for Ed25519). An
    RSA-PSS scheme gives an id-RSASSA-PSS signature (MGF1 with the same hash, a salt as long as
    the digest), as the HSM signs it.

    Raises:
        UnsupportedAlgorithm: the scheme is not one for this key's type.
        HsmError: the HSM or cryptography refused to sign.
    """
    if signature_algorithm is not None and key_algorithm is not None \
            and signature_algorithm.family != key_algorithm.family:
        raise UnsupportedAlgorithm(f"a {key_algorithm.value} key does not sign {signature_algorithm.value}")
    digest = rsa_padding = None
    if key_algorithm is not KeyAlgorithm.ED25519:
        hash_algorithm = signature_algorithm.hash if signature_algorithm else None
        digest = (hash_algorithm or _default_hash(key_algorithm)).cryptography_hash
        if signature_algorithm is not None and signature_algorithm.value.startswith("rsa-pss"):
            rsa_padding = padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.DIGEST_LENGTH)
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    try:
        return builder.sign(private_key, digest, rsa_padding=rsa_padding)
    except SignServerError:
        raise
    except Exception as exc:  # cryptography's own refusal, e.g. an unusable subject
        raise HsmError(f"cannot build the certificate request: {exc}") from exc


def _default_hash(algorithm: KeyAlgorithm | None) -> HashAlgorithm:
    return HashAlgorithm.SHA384 if algorithm is KeyAlgorithm.EC_P384 else HashAlgorithm.SHA256
